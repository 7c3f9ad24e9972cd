"""API keys: requests without a valid key get 401 in the OpenAI envelope; admin keys gate admin routes."""

from __future__ import annotations

import inspect

import httpx
import pytest
from fastapi.routing import APIRoute

from sovereign.config import load_settings
from sovereign.server.app import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("TEST_KEYS", "user-key-1, user-key-2")
    monkeypatch.setenv("TEST_ADMIN_KEYS", "admin-key")
    settings = load_settings(server={"api_keys_env": "TEST_KEYS", "admin_keys_env": "TEST_ADMIN_KEYS"})
    return create_app(settings)


async def test_missing_or_wrong_key_is_401(app: object) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic user-key-1"}):
            response = await client.get("/v1/models", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"
        ok = await client.get("/v1/models", headers={"Authorization": "Bearer user-key-2"})
        assert ok.status_code == 200
        assert "smollm2-135m-instruct" in [m["id"] for m in ok.json()["data"]]
        admin = await client.get("/v1/models", headers={"Authorization": "Bearer admin-key"})
        assert admin.status_code == 200
        # liveness and metrics stay open for probes and scrapers
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


def _api_routes(routes: list[object]) -> list[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI keeps those as wrappers)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:
            found.extend(_api_routes(route.original_router.routes))  # type: ignore[attr-defined]
    return found


def test_no_route_or_dependency_runs_in_a_worker_thread(app: object) -> None:
    """FastAPI runs a plain ``def`` endpoint or dependency in a thread pool: a thread hop on every
    request (it cost measurable proxy latency). Every route of the gateway must be async."""
    routes = _api_routes(app.routes)  # type: ignore[attr-defined]
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/models"} <= {r.path for r in routes}
    sync = []
    for route in routes:
        stack = [route.dependant]
        while stack:
            dependant = stack.pop()
            stack.extend(dependant.dependencies)
            if dependant.call is not None and not inspect.iscoroutinefunction(dependant.call):
                sync.append(f"{route.path}: {getattr(dependant.call, '__name__', dependant.call)}")
    assert sync == []
