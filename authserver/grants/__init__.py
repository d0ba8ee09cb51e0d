"""Grants: what a person has allowed one app to do at one MCP server, as one thing they can see
and take back. A grant is the remembered consent (``interaction.models.Consent``) plus the
refresh-token families and access tokens issued under it.
"""
