"""``GET /healthz`` (process alive), ``GET /readyz`` (models loaded) and ``GET /metrics``."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from sovereign.server.responses import OrjsonResponse
from sovereign.server.state import get_state

router = APIRouter()


@router.get("/healthz")
@router.get("/health", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: 200 while the process serves HTTP. ``/health`` is the same check under the path
    vLLM, llama.cpp's server, SGLang and TGI use, which load tools such as guidellm probe first."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> OrjsonResponse:
    """Readiness: 200 once every chat model is loaded, else 503 with the models still loading."""
    registry = get_state(request).registry
    loading = [name for name, b in registry.chat_backends.items() if not b.ready]
    if loading:
        return OrjsonResponse({"status": "loading", "loading": loading}, status_code=503)
    return OrjsonResponse({"status": "ready"})


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    """Prometheus text format; aggregates all workers when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # prometheus-client's own switch, not a setting
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
