"""One module per grant type; each exposes ``exchange(session, services, client, params, ip)``."""
