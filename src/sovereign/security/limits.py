"""Per-key rate limits: requests per minute (RPM) and tokens per minute (TPM) as token buckets.

A bucket holds at most ``capacity`` (the per-minute limit) and refills at ``capacity / 60`` per
second (the token bucket of Turner 1986, as in LiteLLM's and NGINX's limiters). A request takes
one RPM token; a request is admitted while the TPM bucket is above zero and its prompt and
completion tokens are charged when it ends (so one long answer may overdraw it and the next
requests wait). A refusal is a :class:`~sovereign.errors.RateLimitError` (429, code
``rate_limit_exceeded``) whose ``retry_after_s`` becomes the ``Retry-After`` header.

Buckets live in this process (:class:`LocalBuckets`), or in Redis (:class:`RedisBuckets`, one
atomic Lua script per take) so every worker and host shares them; Redis unreachable: the request
is admitted and the failure logged (fail open, never a 500).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Protocol

from sovereign.errors import RateLimitError
from sovereign.security.keys import Principal

log = logging.getLogger("sovereign.security")


class Buckets(Protocol):
    """Token buckets by name."""

    async def take(self, name: str, capacity: float, cost: float, *, allow_debt: bool) -> float:
        """Refill ``name`` (``capacity`` per minute), then take ``cost`` if the bucket holds it (or,
        with ``allow_debt``, always). Returns the level after the take, or the negative shortfall
        when nothing was taken."""
        ...


class LocalBuckets:
    """Buckets in this process: ``{name: (level, updated monotonic seconds)}``."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}

    async def take(self, name: str, capacity: float, cost: float, *, allow_debt: bool) -> float:
        now = time.monotonic()
        level, then = self._state.get(name, (capacity, now))
        level = min(capacity, level + (now - then) * capacity / 60.0)
        if level >= cost or allow_debt:
            self._state[name] = (level - cost, now)
            return level - cost
        self._state[name] = (level, now)
        return level - cost


_LUA = """
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or ARGV[1])
local t = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[3])
local capacity, cost, now, debt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
level = math.min(capacity, level + math.max(now - t, 0) * capacity / 60)
local after = level - cost
if level >= cost or debt == 1 then level = after end
redis.call('HSET', KEYS[1], 'level', level, 't', now)
redis.call('EXPIRE', KEYS[1], 120)
return tostring(after)
"""


class RedisBuckets:
    """Buckets shared through Redis (``redis.asyncio``): keys ``sovereign:rl:<name>``, Redis's clock."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._script = client.register_script(_LUA)

    async def take(self, name: str, capacity: float, cost: float, *, allow_debt: bool) -> float:
        seconds, micros = await self._client.time()
        now = seconds + micros / 1e6
        return float(await self._script(keys=[f"sovereign:rl:{name}"],
                                        args=[capacity, cost, now, 1 if allow_debt else 0]))

    async def aclose(self) -> None:
        await self._client.aclose()


class RateLimiter:
    """RPM and TPM checks for principals over :class:`Buckets`."""

    def __init__(self, buckets: Buckets) -> None:
        self.buckets = buckets

    async def _take(self, name: str, capacity: float, cost: float, *, allow_debt: bool) -> float | None:
        try:
            return await self.buckets.take(name, capacity, cost, allow_debt=allow_debt)
        except Exception as exc:
            log.warning("rate limiter unavailable, request admitted: %s", exc)
            return None

    async def admit(self, principal: Principal) -> None:
        """Take one request; check the token budget. Raises RateLimitError with ``retry_after_s``."""
        if principal.rpm:
            left = await self._take(f"{principal.key_id}:rpm", principal.rpm, 1, allow_debt=False)
            if left is not None and left < 0:
                raise _limited("requests", principal.rpm, -left * 60 / principal.rpm)
        if principal.tpm:
            left = await self._take(f"{principal.key_id}:tpm", principal.tpm, 0, allow_debt=False)
            if left is not None and left <= 0:
                raise _limited("tokens", principal.tpm, (1 - left) * 60 / principal.tpm)

    async def charge_tokens(self, principal: Principal, tokens: int) -> None:
        """Charge ``tokens`` (prompt + completion) to the TPM bucket once a request ends."""
        if principal.tpm and tokens > 0:
            await self._take(f"{principal.key_id}:tpm", principal.tpm, tokens, allow_debt=True)


def _limited(what: str, limit: int, wait_s: float) -> RateLimitError:
    error = RateLimitError(f"Rate limit reached: {limit} {what} per minute for this API key. "
                           f"Retry in {math.ceil(wait_s)} s.", code="rate_limit_exceeded")
    error.retry_after_s = max(1, math.ceil(wait_s))
    return error
