"""Who may call the gateway and how much: API keys (hashed), scopes, tenants and rate limits.

- :mod:`sovereign.security.keys`: keys created, listed and revoked with ``sovereign keys``; only an
  HMAC-SHA256 of each secret is stored; a key carries a scope, a tenant and its limits.
- :mod:`sovereign.security.limits`: per-key requests-per-minute and tokens-per-minute token
  buckets, in process or shared through Redis.
"""
