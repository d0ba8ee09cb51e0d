"""The admin console (``/admin``): clients, scopes, resources, users, keys, registration policy
and the audit log, for people with the ``admin`` role (``auditor``: the same pages, read-only).

Routes call the domains' own services (client creation validates redirect URIs, secrets are
hashed, every change is an audit event), never a generic CRUD layer over the tables.
"""
