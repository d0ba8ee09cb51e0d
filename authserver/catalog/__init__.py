"""What can be granted: scopes, and the resources (MCP servers) they apply to."""
