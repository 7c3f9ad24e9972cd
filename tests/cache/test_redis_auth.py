"""The Redis cache backend against a real redis-server with a password (requirepass), and over TLS.

The password travels in the URL (``redis://:PASSWORD@host:port/db``, percent-encoded), TLS as
``rediss://`` with redis-py's SSL options in the query (``ssl_ca_certs``, ``ssl_cert_reqs``, and
``ssl_certfile``/``ssl_keyfile`` for client certificates); the gateway reads the URL from the
environment variable ``cache.redis_url_env`` names.

Bad inputs tried: a wrong password, no password, a password with URL-reserved characters
(percent-encoded: works), a plain ``redis://`` URL to a TLS-only port, ``rediss://`` without the CA
(certificate not trusted), no client certificate where the server requires one; and a whole
gateway started with a wrong password. The backend raises a clear
:class:`~sovereign.errors.StorageError` (without the password in it); the cache service and the
gateway turn it into a logged, counted miss and keep serving.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sovereign.cache.backends.redis import RedisCacheBackend
from sovereign.cache.entry import CacheEntry
from sovereign.cache.keys import CacheKey, cache_key
from sovereign.cache.service import ResponseCache
from sovereign.config import CacheSettings
from sovereign.errors import StorageError
from sovereign.observability import metrics
from sovereign.testing.nginx import Certificates, make_certificates
from sovereign.testing.redis import RedisProcess, RedisTLS, redis_server
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams, Usage
from tests.conftest import start_server

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
PASSWORD = "s3cret/p@ss:word#1%"  # URL-reserved characters: the URL carries it percent-encoded
WRONG = "Wr0ng-Pa55-7f3e"
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("redis-certs"))


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """redis-server with requirepass, plain TCP."""
    with redis_server(tmp_path_factory.mktemp("redis-auth"), password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def locked_tls(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Iterator[RedisProcess]:
    """redis-server with requirepass, TLS only, no client certificate needed."""
    tls = RedisTLS(certificates.cert, certificates.key, certificates.ca)
    with redis_server(tmp_path_factory.mktemp("redis-tls"), password=PASSWORD, tls=tls) as server:
        yield server


def entry(key: str, answer: str) -> CacheEntry:
    return CacheEntry(key=key, scope="s" * 64, query="q", pieces=[answer], finish_reason="stop",
                      usage=Usage(3, 2), expires=4_000_000_000.0)


@pytest.fixture
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """``opened(url)``: an opened backend on a fresh key prefix, closed after the test."""
    backends: list[RedisCacheBackend] = []

    async def open_backend(url: str) -> RedisCacheBackend:
        backend = RedisCacheBackend(url, max_entries=100, timeout_s=2.0, prefix=f"t:{uuid.uuid4().hex[:8]}:")
        backends.append(backend)
        await backend.open()
        return backend

    yield open_backend
    for backend in backends:
        await backend.close()


async def put_and_get(backend: RedisCacheBackend) -> None:
    await backend.put(entry("k1", "the answer"))
    found = await backend.get("k1")
    assert found is not None and found.text == "the answer"
    assert await backend.count() == 1
    assert await backend.get("k2") is None


async def test_password_in_the_url_stores_and_gets(locked: RedisProcess, opened: Any) -> None:
    assert "%2F" in locked.url and "%40" in locked.url  # reserved characters percent-encoded
    await put_and_get(await opened(locked.url))


@pytest.mark.parametrize(("password", "reply"), [(WRONG, "invalid username-password pair"),
                                                 (None, "authenticated")])
async def test_wrong_or_missing_password_is_a_clear_storage_error(
    locked: RedisProcess, password: str | None, reply: str
) -> None:
    backend = RedisCacheBackend(locked.url_with(password), max_entries=100, timeout_s=2.0)
    try:
        with pytest.raises(StorageError) as opening:
            await backend.open()
        with pytest.raises(StorageError) as getting:
            await backend.get("k1")
    finally:
        await backend.close()
    for error in (opening.value, getting.value):
        # The message names the server and the failure kind; the server's reply is on the cause.
        assert f"127.0.0.1:{locked.port}" in error.message and "AuthenticationError" in error.message
        assert reply in str(error.__cause__)
        assert WRONG not in error.message and PASSWORD not in error.message


def key(question: str) -> CacheKey:
    request = GenerationRequest(
        model="m", sampling=SamplingParams(temperature=0), messages=(ChatMessage("user", question),)
    )
    found = cache_key(request, tenant="t", chat=True)
    assert found is not None
    return found


async def test_wrong_password_is_a_logged_counted_miss_in_the_service(
    locked: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    errors = metrics.CACHE_ERRORS.labels(backend="redis")._value.get()
    backend = RedisCacheBackend(locked.url_with(WRONG), max_entries=100, timeout_s=1.0)
    cache = ResponseCache(backend, None, CacheSettings(timeout_ms=1000))
    with caplog.at_level(logging.WARNING, logger="sovereign.cache"):
        await cache.start()  # open fails: logged and counted, not raised
        try:
            assert (await cache.lookup(key("How do I copy a file?"))).status == "miss"
            stored = await cache.store(key("How do I copy a file?"), pieces=["shutil.copy"], finish_reason="stop",
                                       usage=Usage(3, 2), metadata=None)
            assert stored is False
        finally:
            await cache.close()
    assert metrics.CACHE_ERRORS.labels(backend="redis")._value.get() >= errors + 3  # open, lookup, store
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("cache open failed") and "AuthenticationError" in w for w in warnings), warnings
    assert any(w.startswith("cache exact lookup failed") and "served as a miss" in w for w in warnings), warnings
    assert not any(WRONG in w for w in warnings)


async def test_tls_with_the_ca_in_the_url_stores_and_gets(locked_tls: RedisProcess, opened: Any) -> None:
    assert locked_tls.url.startswith("rediss://") and "ssl_ca_certs=" in locked_tls.url
    await put_and_get(await opened(locked_tls.url))


async def test_plain_url_to_a_tls_port_or_an_untrusted_certificate_is_a_storage_error(
    locked_tls: RedisProcess
) -> None:
    plain = locked_tls.url.replace("rediss://", "redis://").split("?")[0]
    untrusted = locked_tls.url.split("?")[0]  # rediss:// verifying against the system CAs only
    for url, cause in ((plain, "Connection"), (untrusted, "certificate verify failed")):
        backend = RedisCacheBackend(url, max_entries=100, timeout_s=2.0)
        try:
            with pytest.raises(StorageError, match="ConnectionError") as opening:
                await backend.open()
        finally:
            await backend.close()
        assert cause in str(opening.value.__cause__), (url, opening.value.__cause__)


async def test_client_certificates_when_the_server_requires_them(
    tmp_path: Path, certificates: Certificates, opened: Any
) -> None:
    tls = RedisTLS(certificates.cert, certificates.key, certificates.ca,
                   client_cert=certificates.client_cert, client_key=certificates.client_key)
    with redis_server(tmp_path / "redis-mtls", password=PASSWORD, tls=tls) as server:
        assert "ssl_certfile=" in server.url and "ssl_keyfile=" in server.url
        await put_and_get(await opened(server.url))
        without_cert = server.url.split("&ssl_certfile=")[0]
        backend = RedisCacheBackend(without_cert, max_entries=100, timeout_s=2.0)
        try:
            with pytest.raises(StorageError):
                await backend.open()
        finally:
            await backend.close()


def _gateway_env(url: str) -> dict[str, str]:
    return {"SOVEREIGN_CACHE__BACKEND": "redis", "SOVEREIGN_CACHE__TIMEOUT_MS": "1000",
            "SOVEREIGN_CACHE__REDIS_URL_ENV": "SOV_TEST_REDIS_URL", "SOV_TEST_REDIS_URL": url}


def _ask(url: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4,
            "temperature": 0}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


def _cache_errors(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('sovereign_cache_errors_total{backend="redis"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_gateways_on_tls_redis_with_the_right_and_a_wrong_password(tmp_path: Path, locked_tls: RedisProcess) -> None:
    """One gateway process with the right password caches over TLS (second ask: hit-exact); one with
    a wrong password starts, answers every request (misses) and counts the failures."""
    good = start_server(tmp_path / "good", _gateway_env(locked_tls.url))
    try:
        assert _ask(good.url).headers["x-sovereign-cache"] == "miss"
        assert _ask(good.url).headers["x-sovereign-cache"] == "hit-exact"
    finally:
        good.stop()
    bad = start_server(tmp_path / "bad", _gateway_env(locked_tls.url_with(WRONG)))
    try:
        for _ in range(2):
            assert _ask(bad.url).headers["x-sovereign-cache"] == "miss"
        assert _cache_errors(bad.url) >= 3  # open, then each lookup
        assert httpx.get(bad.url + "/readyz", timeout=10).status_code == 200
    finally:
        bad.stop()
    log = bad.log.read_text()
    assert "cache open failed" in log and "AuthenticationError" in log and WRONG not in log
