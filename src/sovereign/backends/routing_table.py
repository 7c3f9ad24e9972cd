"""The routing table: deployments and routes from ``[backends]``, registered in the model registry.

For every public model named by ``[[backends.deployments]]`` a :class:`~sovereign.backends.router.Router`
is registered (replacing the embedded model when a route reuses its name), plus the switchable
``backends.default_model`` route whose target (a public model or one deployment) changes at run
time through :class:`RouteControl` (``PUT /admin/backends/default``, ``sovereign backends use``).
A background task probes every deployment each ``health_interval_s`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from sovereign.backends.base import Capabilities, ChatBackend
from sovereign.backends.breaker import CircuitBreaker
from sovereign.backends.registry import ENGINES, EngineContext, ModelRegistry
from sovereign.backends.router import Deployment, Router, RoutingPolicy
from sovereign.config import BackendsSettings, Settings
from sovereign.conversations import ConversationStore, open_store
from sovereign.errors import ConfigError, NotFoundError
from sovereign.types import GenerationChunk, GenerationRequest

log = logging.getLogger("sovereign.routing")


def validate_backends(cfg: BackendsSettings, embedded_model: str) -> dict[str, list[str]]:
    """Check ``[backends]`` beyond types; return public model -> deployment names (fallback order).

    Each kind's factory checks its own fields (a remote engine's ``base_url``) when it is built.

    Raises:
        ConfigError: duplicate deployment names, an engine kind no plugin registers, a malformed
            base_url, an alias or ``default_route`` naming nothing, an alias shadowing a model.
    """
    routes: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for d in cfg.deployments:
        if d.name in seen:
            raise ConfigError(f"backends.deployments: the name {d.name!r} is used twice; names must be unique.")
        seen.add(d.name)
        ENGINES.get(d.engine)  # an unknown kind fails here, listing the installed ones
        if d.base_url and not d.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"backends.deployments[{d.name}]: base_url must start with http:// or https://.")
        routes[d.model].append(d.name)
    models = set(routes) | {embedded_model}
    for alias, target in cfg.aliases.items():
        if target not in models:
            raise ConfigError(f"backends.aliases: {alias!r} points at unknown model {target!r}.")
        if alias in models or alias == cfg.default_model:
            raise ConfigError(f"backends.aliases: {alias!r} is already a model name.")
    if cfg.default_model in models:
        raise ConfigError(f"backends.default_model {cfg.default_model!r} collides with a model name.")
    target = cfg.default_route or embedded_model
    if target not in models | seen:
        raise ConfigError(f"backends.default_route {target!r} names no model or deployment.")
    return dict(routes)


class RouteControl:
    """The run-time routing switchboard: deployments, routes, and the default route's target."""

    def __init__(
        self,
        registry: ModelRegistry,
        deployments: dict[str, Deployment],
        routers: dict[str, Router],
        default_model: str,
        default_target: str,
        policy: RoutingPolicy,
        *,
        client: httpx.AsyncClient | None = None,
        store_factory: Callable[[], Awaitable[ConversationStore]] | None = None,
    ) -> None:
        self.registry = registry
        self.deployments = deployments
        self.routers = routers
        self.default_model = default_model
        self.current = default_target
        self._single = {name: Router(name, [d], policy) for name, d in deployments.items()}
        self.store: ConversationStore | None = None
        self._store_factory = store_factory
        self._store_lock = asyncio.Lock()
        self._client = client
        self.prober: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop probing; close the remote backends, any managed engine a route replaced, the HTTP
        pool and the conversation store. The registry's own ``[engine]`` model is not closed here."""
        if self.prober is not None:
            self.prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.prober
        registered = {id(b) for b in self.registry.chat_backends.values()}  # closed by the registry
        for d in self.deployments.values():
            if id(d.backend) not in registered:
                await d.backend.close()
        if self._client is not None:
            await self._client.aclose()
        if self.store is not None:
            await self.store.close()

    def targets(self) -> list[str]:
        """Names ``use`` accepts: public chat models, then deployment names."""
        models = [n for n in self.registry.chat_backends if n != self.default_model]
        return models + [n for n in self.deployments if n not in models]

    def resolve(self, name: str) -> ChatBackend:
        """The backend for a target name. Raises NotFoundError (404) listing the valid names."""
        if name != self.default_model:
            if name in self.registry.chat_backends:
                return self.registry.chat(name)
            if name in self._single:
                return self._single[name]
        raise NotFoundError(
            f"No model or deployment named {name!r}. Choose one of: {', '.join(self.targets())}.",
            param="route",
            code="route_not_found",
        )

    def use(self, name: str) -> str:
        """Point the default route at ``name`` (effective for the next request); returns the previous target."""
        self.resolve(name)
        previous, self.current = self.current, name
        log.info("default route %s -> %s", previous, name)
        return previous

    async def probe(self, name: str | None = None) -> list[dict[str, Any]]:
        """Probe one deployment (or all, concurrently) now; return their status rows."""
        chosen = [self.deployments[name]] if name in self.deployments else list(self.deployments.values())
        if name is not None and name not in self.deployments:
            self.resolve(name)  # 404 for unknown names
            chosen = []
        await asyncio.gather(*(d.probe() for d in chosen))
        return [d.status() for d in chosen]

    def status(self) -> dict[str, Any]:
        return {
            "default_model": self.default_model,
            "default_route": self.current,
            "routes": {name: [d.name for d in r.deployments] for name, r in self.routers.items()},
            "deployments": [d.status() for d in self.deployments.values()],
        }

    async def conversations(self) -> ConversationStore:
        """The conversation store, opened on first use."""
        async with self._store_lock:
            if self.store is None and self._store_factory is not None:
                self.store = await self._store_factory()
        if self.store is None:
            raise ConfigError("No conversation store is configured.")
        return self.store


class SwitchableRoute:
    """The ``default_model`` ChatBackend: delegates each request to ``control.current``'s backend."""

    def __init__(self, name: str, control: RouteControl) -> None:
        self.name = name
        self.control = control

    @property
    def target(self) -> ChatBackend:
        return self.control.resolve(self.control.current)

    @property
    def capabilities(self) -> Capabilities:
        return self.target.capabilities

    @property
    def ready(self) -> bool:
        return self.target.ready

    async def start(self) -> None:
        """The targets are started by the registry."""

    async def close(self) -> None:
        """Nothing owned."""

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self.target.count_prompt_tokens(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        target = self.target
        async for chunk in target.stream(request):
            if chunk.finish_reason is not None:
                route = dict((chunk.metadata or {}).get("route") or {"deployment": target.name})
                chunk.metadata = {**(chunk.metadata or {}), "route": {**route, "target": self.control.current}}
            yield chunk


def build_deployments(settings: Settings, registry: ModelRegistry, client: httpx.AsyncClient) -> dict[str, Deployment]:
    """One :class:`Deployment` per configured entry, built by its kind's factory.

    An ``embedded`` entry without a ``model_path`` is the registry's own ``[engine]`` model (no new
    process); every other entry gets a backend of its own.

    Raises:
        ConfigError: an unknown kind, or the kind's factory rejecting the entry.
    """
    cfg, out = settings.backends, {}
    context = EngineContext(settings, client, cfg.connect_timeout_s, cfg.total_timeout_s)
    for d in cfg.deployments:
        if d.engine == "embedded" and d.model_path is None:
            backend = registry.chat(settings.engine.model_name)
            window = d.context_window or settings.engine.n_ctx
        else:
            backend = ENGINES.get(d.engine)(d, context)
            window = d.context_window or backend.capabilities.context_window
        breaker = CircuitBreaker(d.name, cfg.breaker_failures, cfg.breaker_cooldown_s)
        out[d.name] = Deployment(d.name, backend, breaker, window, d.weight, d.engine, d.base_url)
    return out


async def probe_forever(probe: Callable[[], Awaitable[object]], interval_s: float) -> None:
    """Await ``probe()`` every ``interval_s`` seconds until cancelled (at shutdown).

    A round that raises is logged with its traceback and probing goes on: one bad round (a bug, a
    plugin engine raising a foreign exception) must not silently end health checking for good.
    """
    while True:
        try:
            await probe()
        except Exception:
            log.exception("health probe round failed; probing continues in %.1fs", interval_s)
        await asyncio.sleep(interval_s)


async def start_routing(settings: Settings, registry: ModelRegistry) -> RouteControl:
    """Register routes, aliases and the switchable default route; start the health prober.

    Returns the :class:`RouteControl` (``close()`` it at shutdown).

    Raises:
        ConfigError: invalid ``[backends]`` (see :func:`validate_backends`, :func:`build_deployments`).
    """
    cfg = settings.backends
    embedded = settings.engine.model_name
    plan = validate_backends(cfg, embedded)
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=128,
                                                   keepalive_expiry=2.0))  # under llama-server's 5 s idle close
    deployments = build_deployments(settings, registry, client)
    engine = registry.chat_backends.get(embedded)
    if engine is not None and all(d.backend is not engine for d in deployments.values()):
        # the embedded engine is listed, probed and switchable like any configured deployment
        breaker = CircuitBreaker(embedded, cfg.breaker_failures, cfg.breaker_cooldown_s)
        deployments[embedded] = Deployment(embedded, engine, breaker, settings.engine.n_ctx, 0.0, "embedded")
    policy = RoutingPolicy.from_settings(cfg)
    routers: dict[str, Router] = {}
    for model, names in plan.items():
        routers[model] = Router(model, [deployments[n] for n in names], policy)
        if model in registry.chat_backends:
            registry.replace_chat(model, routers[model])
        else:
            registry.add_chat(routers[model])
    for alias, target in cfg.aliases.items():
        registry.add_chat(registry.chat(target), aliases=[alias])
    control = RouteControl(registry, deployments, routers, cfg.default_model, cfg.default_route or embedded, policy,
                           client=client, store_factory=lambda: open_store(settings))
    registry.add_chat(SwitchableRoute(cfg.default_model, control))
    if cfg.health_interval_s > 0 and deployments:
        control.prober = asyncio.create_task(probe_forever(control.probe, cfg.health_interval_s))
    return control
