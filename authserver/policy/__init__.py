"""Operator policy kept in the database (changed from the admin console, shared by every node)."""
