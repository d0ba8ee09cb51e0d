"""Runnable examples of servers protected by authserver (run from the repository root)."""
