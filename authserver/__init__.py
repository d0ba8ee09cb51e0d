"""authserver: an OAuth 2.1 authorization server for MCP servers."""

__version__ = "0.1.0"
