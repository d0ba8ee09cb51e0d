"""The OAuth 2.1 protocol: metadata, authorization, grants, token handling."""
