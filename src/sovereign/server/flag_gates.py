"""Stage 3b of the request flow: the feature flags that gate one generation request.

Evaluated per request for the caller (user, key id, tenant, headers), documented in
``docs/flags.md``:

- ``ai_inference`` off: the request is refused (403 ``feature_disabled``).
- ``vector_search`` off: the RAG and agent models (source-scoped pipelines) are refused.
- ``semantic_cache`` off: the response cache is skipped (no lookup, no store).
- ``cost_optimization`` off: only exact cache hits are served, no semantic (near-duplicate) ones.

A flag under an active rollout (``sovereign rollout start --flag``) has its variant recorded with
the request's outcome and duration (``sovereign_flag_requests_total``,
``sovereign_flag_request_duration_seconds``): the two arms the rollout judges. For a stream the
duration runs to the first event, the moment the status is decided.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from sovereign.backends.base import ChatBackend, SourceScoped
from sovereign.errors import FeatureDisabledError
from sovereign.flags.evaluation import EvaluationContext
from sovereign.observability import metrics
from sovereign.server.state import get_state


@dataclass(slots=True)
class Gates:
    """What the flags allow this request: ``cache`` (lookup and store), ``semantic`` (near-duplicate
    hits); ``rolled``: variant per flag under rollout; ``started``: perf_counter seconds."""

    cache: bool = True
    semantic: bool = True
    rolled: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def record(self, outcome: str) -> None:
        """Count the request on each rolled-out flag's variant (``ok`` also observes its duration)."""
        elapsed = time.perf_counter() - self.started
        for flag, variant in self.rolled.items():
            metrics.FLAG_REQUESTS.labels(flag=flag, variant=variant, outcome=outcome).inc()
            if outcome == "ok":
                metrics.FLAG_REQUEST_DURATION.labels(flag=flag, variant=variant).observe(elapsed)


def gates_for(request: Request, backend: ChatBackend, *, user: str | None, tenant: str) -> Gates:
    """Evaluate the gating flags for this caller.

    Raises:
        FeatureDisabledError: ``ai_inference``, or ``vector_search`` for a RAG model, is off for the caller.
    """
    service = get_state(request).flags
    if service is None:
        return Gates()
    ctx = EvaluationContext(user=user, api_key=tenant, tenant=tenant, headers=dict(request.headers))
    if not service.enabled("ai_inference", ctx):
        raise FeatureDisabledError("Generation is turned off for this caller by feature flag ai_inference.")
    if isinstance(backend, SourceScoped) and not service.enabled("vector_search", ctx):
        raise FeatureDisabledError(f"Model {backend.name} searches documents, which feature flag vector_search "
                                   "turns off for this caller.")
    return Gates(
        cache=service.enabled("semantic_cache", ctx),
        semantic=service.enabled("cost_optimization", ctx),
        rolled={flag: service.evaluate(flag, ctx).variant for flag in service.rolled_out_flags()},
    )
