"""API keys, scopes and per-key limits, on real SQLite / PostgreSQL and through a live gateway.

Keys are created with the real CLI (``sovereign keys create``) in the gateway's data directory.
Bad input tried: no key, a malformed key, a key with a wrong secret, a revoked key, an expired key,
a user key on admin routes, a model outside the key's allow-list, a 4th request under rpm=3, a
token budget overdrawn (tpm), max_tokens above server.max_tokens_ceiling, more messages than
server.max_messages, a public bind with no key, `keys revoke` of an unknown id, `--rpm 0`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from sovereign.flags.store import PostgresControlStore, SqliteControlStore
from sovereign.security.keys import KeyRing, parse_token
from sovereign.server.startup import _loopback
from tests.conftest import LiveServer, free_port, start_server, wait_every_worker

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.anyio


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env.update(SOVEREIGN_DATA_DIR=str(data), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "sovereign", "keys", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def create(data: Path, *args: str) -> str:
    done = cli(data, "create", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


# -- the key ring on both databases ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def ring(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        store: Any = await SqliteControlStore.open(tmp_path / "control.sqlite3")
    else:
        store = await PostgresControlStore.open(request.getfixturevalue("pg_uri"))
    yield KeyRing(store, b"k" * 32, cache_s=0.01)
    await store.close()


async def test_keys_verify_only_with_the_right_secret_and_only_while_valid(ring: KeyRing, tmp_path: Path) -> None:
    plaintext, row = await ring.create("alice", rpm=10, models=["m"])
    principal = await ring.verify(plaintext)
    assert principal is not None and (principal.tenant, principal.scope, principal.rpm) == ("alice", "user", 10)
    key_id, secret = parse_token(plaintext)  # type: ignore[misc]
    assert await ring.verify(f"sk-sov-{key_id}.{'x' * len(secret)}") is None  # wrong secret
    assert await ring.verify("sk-sov-nothex.abc") is None and await ring.verify("Bearer nonsense") is None
    (stored,) = await ring.store.keys(key_id)
    assert stored["hash"] != secret and len(stored["hash"]) == 64  # HMAC-SHA256 hex, never the secret
    await ring.revoke(row["id"])
    time.sleep(0.02)
    assert await ring.verify(plaintext) is None
    short, _ = await ring.create("brief", expires_in_s=0.05)
    assert await ring.verify(short) is not None
    time.sleep(0.1)
    assert await ring.verify(short) is None  # expired
    with pytest.raises(Exception, match="No active key"):
        await ring.revoke(row["id"])  # already revoked


def test_the_secret_is_never_written_to_disk(tmp_path: Path) -> None:
    plaintext = create(tmp_path, "--name", "bob")
    secret = plaintext.split(".", 1)[1].encode()
    assert all(secret not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert oct((tmp_path / "secret.key").stat().st_mode & 0o777) == "0o600"
    assert cli(tmp_path, "create", "--name", "x", "--rpm", "0").returncode == 1
    assert cli(tmp_path, "revoke", "ffffffffffff").returncode == 1
    listed = cli(tmp_path, "list")
    assert "bob" in listed.stdout and plaintext not in listed.stdout


def test_loopback_hosts() -> None:
    assert all(_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2"))
    assert not any(_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


# -- a live gateway ----------------------------------------------------------------------------------


class Keys:
    def __init__(self, data: Path) -> None:
        self.admin = create(data, "--name", "ops", "--scope", "admin")
        self.user = create(data, "--name", "alice", "--tenant", "team-a")
        self.rpm = create(data, "--name", "limited", "--rpm", "3")
        self.tpm = create(data, "--name", "thrifty", "--tpm", "40")
        self.narrow = create(data, "--name", "narrow", "--models", "other-model")
        self.doomed = create(data, "--name", "doomed")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Keys, Path]]:
    data = tmp_path_factory.mktemp("keys") / "data"
    keys = Keys(data)
    server = start_server(data, {"SOVEREIGN_SECURITY__KEY_CACHE_S": "0.3", "SOVEREIGN_ENGINE__N_CTX": "1024",
                                 "SOVEREIGN_SERVER__MAX_TOKENS_CEILING": "64", "SOVEREIGN_SERVER__MAX_MESSAGES": "4"})
    yield server, keys, data
    server.stop()


CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while CLIENTS:
        CLIENTS.pop().close()


def sdk(url: str, key: str | None) -> openai.OpenAI:
    CLIENTS.append(openai.OpenAI(base_url=url + "/v1", api_key=key or "none", max_retries=0, timeout=60))
    return CLIENTS[-1]


def hi(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=2, **extra)


def test_keys_authenticate_by_bearer_and_x_api_key(gateway: tuple[LiveServer, Keys, Path]) -> None:
    server, keys, _ = gateway
    assert hi(sdk(server.url, keys.user)).choices[0].finish_reason in ("stop", "length")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(server.url + "/v1/chat/completions", json=body,
                      headers={"x-api-key": keys.user}, timeout=60).status_code == 200
    for bad in (None, "sk-sov-000000000000.wrongwrongwrongwrongwrong", "nonsense"):
        with pytest.raises(openai.AuthenticationError) as err:
            hi(sdk(server.url, bad))
        assert err.value.status_code == 401 and err.value.body["type"] == "authentication_error"


def test_admin_routes_need_admin_scope(gateway: tuple[LiveServer, Keys, Path]) -> None:
    server, keys, _ = gateway
    for method, path, body in (("GET", "/admin/flags", None), ("PUT", "/admin/flags/semantic_cache", {}),
                               ("GET", "/admin/backends", None), ("PUT", "/admin/backends/default", {"route": MODEL}),
                               ("GET", "/admin/rollouts", None), ("GET", "/admin/cache", None),
                               ("DELETE", "/admin/cache", None), ("DELETE", "/v1/documents/no-such-doc", None)):
        user = httpx.request(method, server.url + path, json=body, headers={"Authorization": f"Bearer {keys.user}"})
        assert user.status_code == 403, (path, user.text)
        admin = httpx.request(method, server.url + path, json=body,
                              headers={"Authorization": f"Bearer {keys.admin}"})
        assert admin.status_code == (404 if "documents" in path else 200), (path, admin.text)


def test_rpm_limit_answers_429_with_retry_after(gateway: tuple[LiveServer, Keys, Path]) -> None:
    server, keys, _ = gateway
    client = sdk(server.url, keys.rpm)
    for _ in range(3):
        hi(client)
    with pytest.raises(openai.RateLimitError) as err:
        hi(client)
    assert err.value.code == "rate_limit_exceeded"
    assert int(err.value.response.headers["retry-after"]) >= 1
    hi(sdk(server.url, keys.user))  # another key is not limited


def test_tpm_budget_is_charged_with_the_tokens_used(gateway: tuple[LiveServer, Keys, Path]) -> None:
    server, keys, _ = gateway
    client = sdk(server.url, keys.tpm)
    statuses = []
    for _ in range(6):
        try:
            hi(client)
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(429)
            assert "tokens per minute" in exc.message and int(exc.response.headers["retry-after"]) >= 1
            break
    assert statuses[0] == 200 and statuses[-1] == 429  # ~20 prompt tokens a request: the 40-token budget runs out


def test_model_allow_list_and_request_ceilings(gateway: tuple[LiveServer, Keys, Path]) -> None:
    server, keys, _ = gateway
    with pytest.raises(openai.PermissionDeniedError) as err:
        hi(sdk(server.url, keys.narrow))
    assert err.value.code == "model_not_allowed"
    with pytest.raises(openai.BadRequestError, match="max_tokens_ceiling"):
        sdk(server.url, keys.user).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=65)
    with pytest.raises(openai.BadRequestError, match="max_messages"):
        sdk(server.url, keys.user).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}] * 5, max_tokens=2)


def test_revocation_and_new_keys_take_effect_while_serving(gateway: tuple[LiveServer, Keys, Path]) -> None:
    server, keys, data = gateway
    hi(sdk(server.url, keys.doomed))
    key_id = parse_token(keys.doomed)[0]  # type: ignore[index]
    assert cli(data, "revoke", key_id).returncode == 0
    time.sleep(0.5)  # security.key_cache_s = 0.3
    with pytest.raises(openai.AuthenticationError):
        hi(sdk(server.url, keys.doomed))
    fresh = create(data, "--name", "late")
    time.sleep(0.5)
    assert hi(sdk(server.url, fresh)).choices


def test_a_public_bind_without_any_key_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env["SOVEREIGN_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "sovereign", "serve", "--host", "0.0.0.0", "--port",
                           str(free_port())], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    assert "serves on loopback only" in done.stdout + done.stderr


def test_rate_limits_are_shared_across_workers_through_redis(tmp_path: Path, redis_proc: Any) -> None:
    key = create(tmp_path / "data", "--name", "shared", "--rpm", "4")
    server = start_server(tmp_path / "data", {"SOVEREIGN_SECURITY__LIMITS_REDIS_URL_ENV": "LIMITS_REDIS",
                                              "LIMITS_REDIS": redis_proc.url, "SOVEREIGN_ENGINE__N_CTX": "512"},
                          ["--workers", "2"])
    try:
        wait_every_worker(server.url, timeout=150)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        codes = [httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60,  # fresh connections
                            headers={"Authorization": f"Bearer {key}"}).status_code for _ in range(8)]
    finally:
        server.stop()
    assert codes.count(200) == 4 and codes.count(429) == 4, codes  # one bucket for both workers
