"""The gateway's start-up order, declared in one place.

Each stage starts one room from what the stages before it started, and returns the async ``close``
run at shutdown (in reverse order)::

    observability  logs, traces, host metrics          needs: settings
    drift          drift recorder, flush/check task    needs: settings (data_dir/drift.sqlite)
    security       API keys, rate limits, bind policy  needs: settings (the control database)
    rag            document memory                     needs: the registry's embedding model
    cache          response cache, invalidated by rag  needs: rag (on_change), embedding model
    pipelines      sovereign-rag, sovereign-agent, ... needs: rag, the registry's chat model
    routing        deployments, routes, default route  needs: every chat model registered
    flags          flags, rollout splits, controller   needs: routing (the routers it splits)

The engines themselves start after the last stage, in the background (``/readyz`` says when).
A room that is off (``cache.enabled = false``) or whose extra is missing leaves its
:class:`~sovereign.server.state.AppState` field None; the gateway serves without it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from sovereign.errors import ConfigError, MissingExtraError, ModelNotFoundError
from sovereign.extras import installed
from sovereign.server.state import AppState

log = logging.getLogger("sovereign.server")
Close = Callable[[], Awaitable[None]]


async def start_observability(state: AppState) -> Close | None:
    from sovereign.observability.setup import start_observability as start

    return await start(state.settings)


async def start_drift(state: AppState) -> Close | None:
    """The drift recorder and its flush/check task (:mod:`sovereign.observability.drift_monitor`)
    when ``drift.enabled``; without the mlops extra (scipy) drift stays off with a warning."""
    settings = state.settings
    if not settings.drift.enabled:
        return None
    from sovereign.extras import require

    try:
        require("scipy", extra="mlops", feature="drift detection")
    except MissingExtraError as exc:
        log.warning("drift detection off: %s", exc.message)
        state.off["drift"] = exc.message
        return None
    from sovereign.observability.drift_monitor import start_monitor, stop_monitor

    monitor = state.drift = await start_monitor(settings)

    async def close() -> None:
        state.drift = None
        await stop_monitor(monitor)

    return close


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def start_security(state: AppState) -> Close | None:
    """Stored keys and the rate limiter; refuses a public bind with no key at all.

    Raises:
        ConfigError: ``server.host`` is not loopback, no key exists and
            ``server.allow_public_without_keys`` is false.
    """
    from sovereign.config import resolve_secret
    from sovereign.flags.store import open_control_store
    from sovereign.security.keys import KeyRing, server_secret
    from sovereign.security.limits import LocalBuckets, RateLimiter, RedisBuckets

    settings = state.settings
    dsn = resolve_secret(settings.flags.store_dsn_env) if settings.flags.store_dsn_env else None
    store = await open_control_store(settings.data_dir / "control.sqlite3", dsn)
    state.keys = KeyRing(store, server_secret(settings.data_dir, settings.security.secret_env),
                         settings.security.key_cache_s)
    redis_url = resolve_secret(settings.security.limits_redis_url_env) if settings.security.limits_redis_url_env \
        else None
    buckets: LocalBuckets | RedisBuckets = LocalBuckets()
    if redis_url:
        from sovereign.extras import require

        require("redis", extra="redis", feature="rate limits shared through Redis")
        import redis.asyncio

        buckets = RedisBuckets(redis.asyncio.from_url(redis_url))
    state.limiter = RateLimiter(buckets)
    keyless = not (state.api_keys or state.admin_keys or await state.keys.active_count())
    host = settings.server.host
    if keyless and not _loopback(host) and not settings.server.allow_public_without_keys:
        await store.close()
        raise ConfigError(
            f"No API key exists, so the gateway serves on loopback only, not on {host}. Create one with "
            "`sovereign keys create --name NAME` (or set server.api_keys_env), or set "
            "server.allow_public_without_keys = true to serve everyone.")
    if keyless:
        log.warning("no API key configured: open single-user mode on %s; `sovereign keys create` turns "
                    "authentication on", host)

    async def close() -> None:
        state.keys = None
        if isinstance(buckets, RedisBuckets):
            await buckets.aclose()
        await store.close()

    return close


async def start_rag(state: AppState) -> Close | None:
    from sovereign.rag.service import RagService

    settings = state.settings
    try:
        embedder = state.registry.embedding(settings.embeddings.model_name)
    except ModelNotFoundError:
        embedder = None
    try:
        service = await RagService.open(settings, embedder=embedder)
    except MissingExtraError as exc:
        if settings.rag.store != "embedded":
            raise  # a store the user chose must not be skipped quietly
        log.warning("document memory off: %s", exc.message)
        state.off["rag"] = exc.message
        return None
    state.rag = service

    async def close() -> None:
        state.rag = None
        await service.close()

    return close


async def start_cache(state: AppState) -> Close | None:
    settings = state.settings
    if not settings.cache.enabled:
        return None
    from sovereign.cache.backends import build_backend
    from sovereign.cache.service import ResponseCache

    try:
        embedder = state.registry.embedding(settings.embeddings.model_name)
    except ModelNotFoundError:
        log.warning("no embedding model %r: the response cache runs its exact layer only",
                    settings.embeddings.model_name)
        embedder = None
    if embedder is not None and not installed("usearch"):
        log.warning("the response cache runs its exact layer only: its semantic layer needs the 'rag' extra "
                    "(pip install 'sovereign[rag]')")
        embedder = None
    cache = ResponseCache(build_backend(settings), embedder, settings.cache)
    await cache.start()  # a storage failure is logged and counted: the cache answers "miss"
    state.cache = cache
    if state.rag is not None:
        state.rag.on_change.append(cache.on_documents_changed)
    return cache.close


async def start_pipelines(state: AppState) -> Close | None:
    from sovereign.server.pipelines import PIPELINES

    for name in PIPELINES.names():
        try:
            backend = PIPELINES.get(name)(state.settings, state.registry, state.rag)
        except MissingExtraError as exc:
            log.warning("pipeline %s not served: %s", name, exc.message)
            continue
        if backend is not None:
            state.registry.add_chat(backend)
    return None  # the registry starts and closes pipeline models with the engines


async def start_routing(state: AppState) -> Close | None:
    from sovereign.backends.routing_table import start_routing as start

    control = await start(state.settings, state.registry)
    state.routing = control
    return control.close


async def start_flags(state: AppState) -> Close | None:
    from sovereign.config import resolve_secret
    from sovereign.flags.service import FlagService
    from sovereign.flags.store import open_control_store

    settings = state.settings
    dsn = resolve_secret(settings.flags.store_dsn_env) if settings.flags.store_dsn_env else None
    store = await open_control_store(settings.data_dir / "control.sqlite3", dsn)
    routers = state.routing.routers if state.routing is not None else {}
    try:
        gate = None
        if state.rag is not None:
            from sovereign.evaluation.gate import InProcessGate
            from sovereign.evaluation.targets import InProcessTarget

            registry, rag = state.registry, state.rag
            gate = InProcessGate(lambda tenant: InProcessTarget(registry, rag, tenant=tenant),
                                 max_tokens=settings.eval.max_tokens,
                                 support_threshold=settings.agents.support_threshold)
        service = FlagService(settings, store, routers, gate_evaluator=gate)
        engines = [*state.registry.chat_backends.values(), *(r for router in routers.values() for r in
                                                             (d.backend for d in router.deployments))]
        await service.start(engines)
    except BaseException:
        await store.close()
        raise
    state.flags = service

    async def close() -> None:
        state.flags = None
        await service.close()

    return close


@dataclass(frozen=True, slots=True)
class Stage:
    """One start-up step: ``start(state)`` fills its room's field and returns its close (or None)."""

    name: str
    start: Callable[[AppState], Awaitable[Close | None]]


STAGES: tuple[Stage, ...] = (
    Stage("observability", start_observability),
    Stage("drift", start_drift),
    Stage("security", start_security),
    Stage("rag", start_rag),
    Stage("cache", start_cache),
    Stage("pipelines", start_pipelines),
    Stage("routing", start_routing),
    Stage("flags", start_flags),
)


async def start_all(state: AppState, stack: AsyncExitStack) -> None:
    """Run :data:`STAGES` in order; each close is pushed on ``stack`` (run in reverse at exit)."""
    for stage in STAGES:
        close = await stage.start(state)
        if close is not None:
            stack.push_async_callback(close)
