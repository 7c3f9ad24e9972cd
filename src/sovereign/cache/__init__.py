"""Response cache: exact scope keys, a semantic layer with a contrast guard, sqlite and redis backends.

See docs/cache.md; the HTTP integration is :mod:`sovereign.server.response_cache`.
"""
