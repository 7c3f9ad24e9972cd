"""Response cache: exact scope keys, a semantic layer with a contrast guard, sqlite and redis backends.

See docs/cache.md; the per-request decision is :mod:`sovereign.cache.request_plan`, run by
:mod:`sovereign.server.request_flow`.
"""
