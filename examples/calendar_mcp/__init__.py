"""The calendar demo: an MCP server (official SDK) protected by authserver. See ``server.py`` and ``make demo``."""
