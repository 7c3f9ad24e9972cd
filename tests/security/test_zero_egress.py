"""Zero egress: serve, ingest, ask, the agent model and the embeddings never try to leave the host.

The real commands run inside a network namespace holding only ``lo`` (``unshare --net`` keeps a
``sleep`` in it; each command enters with ``nsenter --net``); where the container forbids namespaces
they run on the host's network instead, and the evidence below still shows every attempt. Three
witnesses watch every process:

- the Python audit hook (:mod:`sovereign.testing.egress_audit`) in each ``sovereign`` process and
  the HTTP client: every ``socket.connect``/``sendto``/``sendmsg`` must be loopback or AF_UNIX, every
  ``getaddrinfo``/``gethostbyname`` must ask about localhost, 127.0.0.1 or ::1;
- ``strace`` (when installed) over each command's whole process tree, llama-server included;
- ``/proc/PID/net/{tcp,tcp6,udp,udp6}`` of the llama-server child and the gateway while they serve:
  no peer but loopback or the unspecified address.

The gateway is kept serving for 30 s and every process gets a fresh ``HOME``: the first egress this test
found was timer-driven (onnxruntime's 1DS telemetry uploader resolves its collector ~10 s after the
first inference session; ``ORT_DISABLE_TELEMETRY=1`` turns it off, see docs/egress.md).

Bad inputs tried (so that the witnesses can be seen to fail): a process in the same namespace that
connects to 192.0.2.1 (TEST-NET-1) and resolves ``example.com``; the hook and strace must report
both. A unit check reads every setting that could call out (OTLP export, remote engines, remote
embeddings, Redis, PostgreSQL, Prometheus) and asserts it is off by default and named in docs/egress.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sovereign.config import Settings, load_settings
from sovereign.testing.egress_audit import (
    audit_env,
    command_line,
    descendants,
    is_local_host,
    outbound_events,
    parse_proc_table,
    proc_peers,
    read_events,
    remote_peers,
    strace_calls,
    strace_outbound,
    strace_prefix,
)
from tests.conftest import ROOT, free_port

DOCS = {
    "json.md": "# json\n\njson.loads(s) deserializes s, a str holding a JSON document, to a Python object.\n",
    "shutil.md": "# shutil\n\nshutil.copy(src, dst) copies the file src to the file or directory dst.\n",
}
# Background work (telemetry uploaders, probes, flushes) runs on timers: the gateway is kept serving at
# least this long, and each test process gets a fresh HOME, so nothing depends on what earlier runs left.
MIN_SERVE_S = 30.0
ENGINE_ENV = {"SOVEREIGN_ENGINE__N_CTX": "1024", "SOVEREIGN_ENGINE__N_PARALLEL": "2",
              "SOVEREIGN_AGENTS__MAX_TOKENS": "8", "SOVEREIGN_AGENTS__NODE_TIMEOUT_S": "300"}

# The HTTP client, run inside the namespace (the test process is outside it): waits for /readyz, then
# embeddings, the agent model, the RAG model and one stream; prints one JSON summary.
CLIENT = r'''
import json, sys, time
import httpx

url = sys.argv[1]
deadline = time.monotonic() + 300
while True:
    try:
        if httpx.get(url + "/readyz", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        print(json.dumps({"ready": False}))
        sys.exit(1)
    time.sleep(0.3)
out = {}
with httpx.Client(base_url=url, timeout=600) as client:
    r = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["kept on this host"]})
    out["embeddings"] = [r.status_code, len(r.json()["data"][0]["embedding"]) if r.status_code == 200 else r.text]
    for model in ("sovereign-agent", "sovereign-rag"):
        r = client.post("/v1/chat/completions", json={
            "model": model, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "What does json.loads do?"}]})
        body = r.json()
        out[model] = [r.status_code, body["choices"][0]["finish_reason"] if r.status_code == 200 else body,
                      len(body.get("sovereign", {}).get("sources", [])) if r.status_code == 200 else 0]
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "smollm2-135m-instruct", "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    out["stream"] = [r.status_code, lines[-1] if lines else None]
print(json.dumps(out))
'''

# The bad inputs: a connection to TEST-NET-1 and a DNS lookup, which every witness must report.
INTRUDER = r'''
import socket
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2).close()
    print("connected")
except OSError as exc:
    print("connect", exc.errno)
try:
    socket.getaddrinfo("example.com", 443)
    print("resolved")
except OSError as exc:
    print("resolve", exc.errno)
'''


class Netns:
    """Where the commands run: inside a loopback-only network namespace (``prefix`` enters it) or,
    when namespaces are not permitted, on the host's network (``prefix`` empty)."""

    def __init__(self, prefix: list[str], holder: subprocess.Popen[bytes] | None) -> None:
        self.prefix = prefix
        self.holder = holder

    @property
    def isolated(self) -> bool:
        return self.holder is not None

    def interfaces(self) -> list[str]:
        pid = self.holder.pid if self.holder is not None else os.getpid()
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
        return sorted(line.split(":", 1)[0].strip() for line in lines)


def _own_netns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    except OSError:
        return False


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    holder = None
    if unshare and nsenter:
        holder = subprocess.Popen([unshare, "--net", "sleep", "3600"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while holder.poll() is None and not _own_netns(holder.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if holder.poll() is not None or not _own_netns(holder.pid):
            holder.kill()
            holder.wait()
            holder = None
    if holder is None:
        print("\nzero egress: network namespaces not permitted here; running on the host network")
        yield Netns([], None)
        return
    assert nsenter is not None
    prefix = [nsenter, f"--net=/proc/{holder.pid}/ns/net"]
    ip = shutil.which("ip")
    up = [ip, "link", "set", "lo", "up"] if ip is not None else [sys.executable, "-c", (
        "import fcntl, socket, struct; s = socket.socket(); q = struct.pack('16sh', b'lo', 0); "
        "f = struct.unpack('16sh', fcntl.ioctl(s, 0x8913, q))[1]; "
        "fcntl.ioctl(s, 0x8914, struct.pack('16sh', b'lo', f | 1))")]
    subprocess.run([*prefix, *up], check=True, timeout=30)
    try:
        yield Netns(prefix, holder)
    finally:
        holder.kill()
        holder.wait()


def base_env(data: Path, log: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "SOVEREIGN_DATA_DIR": str(data), "COLUMNS": "200", **ENGINE_ENV,
            **audit_env(log, env)}


def traced(trace: Path, command: list[str]) -> list[str]:
    prefix = strace_prefix(trace)
    return [*prefix, *command] if prefix else command


def run(ns: Netns, command: list[str], env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run([*ns.prefix, *command], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


def sovereign(*args: str) -> list[str]:
    return [sys.executable, "-m", "sovereign", *args]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the traced gateway (the python process under strace, else ``proc``), then wait."""
    targets = [pid for pid in descendants(proc.pid) if "serve" in command_line(pid)] or [proc.pid]
    for pid in targets[:1]:
        os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.integration
@pytest.mark.slow
def test_serve_ingest_ask_agent_and_embeddings_make_no_outbound_attempt(netns: Netns, tmp_path: Path) -> None:
    log, data, docs = tmp_path / "audit.jsonl", tmp_path / "data", tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    env = base_env(data, log, tmp_path / "home")
    if netns.isolated:
        assert netns.interfaces() == ["lo"]

    ingested = run(netns, traced(tmp_path / "ingest.strace", sovereign("ingest", str(docs))), env)
    assert "added 2" in ingested, ingested
    answer = run(netns, traced(tmp_path / "ask.strace", sovereign("ask", "What does json.loads do?",
                                                                  "--max-tokens", "8", "-k", "1")), env)
    assert "Sources" in answer and "json.md" in answer, answer

    port = free_port()
    started = time.monotonic()
    server_log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*netns.prefix, *traced(tmp_path / "serve.strace",
                                sovereign("serve", "--port", str(port), "--log-level", "warning"))],
        env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        (tmp_path / "client.py").write_text(CLIENT)
        client = subprocess.Popen([*netns.prefix, sys.executable, str(tmp_path / "client.py"),
                                   f"http://127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        deadline = time.monotonic() + 900
        while client.poll() is None and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if client.poll() is None:
            client.kill()
        out, err = client.communicate()
        assert client.returncode == 0, (out, err[-3000:], (tmp_path / "serve.log").read_text()[-3000:])
        summary = json.loads(out.strip().splitlines()[-1])

        engines = [pid for pid in descendants(server.pid) if command_line(pid)[:1]
                   and command_line(pid)[0].endswith("llama-server")]
        gateways = [pid for pid in descendants(server.pid) if "serve" in command_line(pid)] or [server.pid]
        assert engines, "no llama-server under the gateway"
        sockets = {pid: proc_peers(pid) for pid in [*engines, gateways[0]]}
        while time.monotonic() - started < MIN_SERVE_S and server.poll() is None:
            time.sleep(1)  # idle, serving: timers fire (onnxruntime's telemetry uploader did, ~10 s in)
        for pid in sockets:
            sockets[pid] += proc_peers(pid)
    finally:
        stop(server)
        server_log.close()

    print(f"\nzero egress: namespace={'lo only' if netns.isolated else 'host network'}; client {summary}")
    assert summary["embeddings"] == [200, 384]
    assert summary["sovereign-agent"][0] == 200 and summary["sovereign-agent"][1] in ("stop", "length")
    assert summary["sovereign-rag"][0] == 200 and summary["sovereign-rag"][2] >= 1
    assert summary["stream"] == [200, "data: [DONE]"]

    # witness 1: the audit hook saw the gateway reach its engine, and nothing leave the host
    events = read_events(log)
    connects = [e for e in events if e["event"] == "socket.connect" and e["family"] in ("AF_INET", "AF_INET6")]
    assert {e["pid"] for e in connects} >= {gateways[0]}, "the hook saw no connection of the gateway"
    assert len({e["pid"] for e in connects}) >= 3  # ask (its engine), the gateway, the client
    assert all(is_local_host(e["address"][0]) for e in connects)
    assert outbound_events(events) == []
    print(f"zero egress: {len(events)} audited socket events from {len({e['pid'] for e in events})} processes, "
          f"0 outbound")

    # witness 2: strace over every command's process tree (native code included)
    traces = [tmp_path / f"{name}.strace" for name in ("ingest", "ask", "serve")]
    if strace_prefix(tmp_path / "x") is not None:
        assert any("127.0.0.1" in line for line in strace_calls(tmp_path / "serve.strace"))
        for trace in traces:
            assert strace_outbound(trace) == [], (
                f"{trace.name}: native code tried to leave the host (a DNS server on port 53 from an onnxruntime "
                "thread is its telemetry, on unless ORT_DISABLE_TELEMETRY=1; see docs/egress.md)")
        print(f"zero egress: strace {sum(len(strace_calls(t)) for t in traces)} addressed calls, 0 outbound")

    # witness 3: the sockets of the engine and the gateway while they served
    for pid, peers in sockets.items():
        assert any(peer.state == "0A" for peer in peers), f"no listening socket seen for {pid}"
        assert remote_peers(peers) == [], pid


@pytest.mark.integration
def test_the_witnesses_report_a_connection_and_a_lookup_off_the_host(netns: Netns, tmp_path: Path) -> None:
    log, trace = tmp_path / "intruder.jsonl", tmp_path / "intruder.strace"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}, **audit_env(log)}
    out = run(netns, traced(trace, [sys.executable, "-c", INTRUDER]), env, timeout=60)
    if netns.isolated:  # nothing but lo: no route out, no DNS server reachable
        assert "connect 101" in out, out  # ENETUNREACH
    flagged = outbound_events(read_events(log))
    assert {e["event"] for e in flagged} >= {"socket.connect", "socket.getaddrinfo"}, flagged
    assert any(e.get("address") == ["192.0.2.1", 80] for e in flagged)
    assert any(e.get("host") == "example.com" for e in flagged)
    if strace_prefix(trace) is not None:
        assert any('"192.0.2.1"' in line for line in strace_outbound(trace)), trace.read_text()


def test_the_parsers_tell_loopback_from_the_outside(tmp_path: Path) -> None:
    """The witnesses' parsers on known lines: loopback, unspecified and kernel-local pass; the rest is flagged."""
    assert all(map(is_local_host, [None, "", "localhost", "127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1",
                                   "0.0.0.0", "::", "[::1]"]))
    assert not any(map(is_local_host, ["example.com", "10.0.0.1", "192.0.2.1", "2001:db8::1", "::ffff:8.8.8.8",
                                       "localhost.example.com", b"127.0.0.1"]))
    tcp = ("  sl  local_address rem_address   st\n"
           "   0: 0100007F:1F90 00000000:0000 0A\n"      # 127.0.0.1:8080 listening
           "   1: 0100007F:A000 0100007F:1F90 01\n"      # 127.0.0.1 -> 127.0.0.1:8080
           "   2: 0100000A:A001 08080808:0035 02\n")     # 10.0.0.1 -> 8.8.8.8:53, SYN sent
    tcp6 = ("  sl  local_address rem_address   st\n"
            "   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:A002 01\n"  # ::1
            "   1: 0000000000000000FFFF00000100007F:1F91 0000000000000000FFFF000008080808:01BB 01\n")
    peers = parse_proc_table(tcp, "tcp") + parse_proc_table(tcp6, "tcp6")
    assert [p.remote for p in peers] == [("0.0.0.0", 0), ("127.0.0.1", 8080), ("8.8.8.8", 53), ("::1", 40962),
                                         ("::ffff:808:808", 443)]
    assert [p.remote for p in remote_peers(peers)] == [("8.8.8.8", 53), ("::ffff:808:808", 443)]
    trace = tmp_path / "calls.strace"
    trace.write_text(
        '1 connect(3, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("127.0.0.1")}, 16) = 0\n'
        '1 connect(4, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 110) = 0\n'
        '1 sendto(5, "x", 1, 0, {nl_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, 12) = 1\n'
        '1 connect(6, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0\n'
        '1 sendto(7, "x", 1, 0, NULL, 0) = 1\n'
        '2 connect(8, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = -1\n'
        '2 connect(9, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1\n')
    assert [line.split()[1][:10] for line in strace_outbound(trace)] == ["connect(8,", "connect(9,"]
    assert outbound_events([
        {"event": "socket.connect", "family": "AF_INET", "address": ["127.0.0.1", 80]},
        {"event": "socket.connect", "family": "AF_UNIX", "address": "/run/x.sock"},
        {"event": "socket.sendto", "family": "AF_INET", "address": None},
        {"event": "socket.getaddrinfo", "host": "localhost"},
        {"event": "socket.connect", "family": "AF_INET6", "address": ["2001:db8::1", 443, 0, 0]},
        {"event": "socket.gethostbyname", "host": "example.com"},
    ]) == [{"event": "socket.connect", "family": "AF_INET6", "address": ["2001:db8::1", 443, 0, 0]},
           {"event": "socket.gethostbyname", "host": "example.com"}]


# Every setting that makes Sovereign open a connection off the host, and its off-by-default value.
CALLING_OUT: dict[str, Any] = {
    "observability.otlp_endpoint": None,
    "observability.otlp_headers_env": None,
    "embeddings.runtime": "onnx-int8",
    "embeddings.remote_base_url": None,
    "embeddings.remote_model": None,
    "embeddings.remote_api_key_env": None,
    "backends.deployments": [],
    "backends.default_route": None,
    "backends.conversations_store": "sqlite",
    "backends.conversations_dsn_env": None,
    "rag.store": "embedded",
    "rag.pg_dsn_env": None,
    "cache.backend": "sqlite",
    "cache.redis_url_env": None,
    "security.limits_redis_url_env": None,
    "agents.checkpointer": "sqlite",
    "agents.pg_dsn_env": None,
    "flags.store_dsn_env": None,
    "rollout.prometheus_url": None,
    "server.host": "127.0.0.1",
}
# Names that suggest a setting reaches another host; each such setting must be listed above.
SUSPECT = ("url", "endpoint", "dsn", "host", "remote", "deployments", "store", "backend", "checkpointer", "runtime")


def settings_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from settings_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def default_of(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_every_setting_that_could_call_out_is_off_by_default_and_documented() -> None:
    settings = load_settings()
    suspects = {f for f in settings_fields(Settings) if any(word in f.rsplit(".", 1)[-1] for word in SUSPECT)}
    assert suspects <= set(CALLING_OUT), f"settings that may call out, not reviewed here: {suspects - set(CALLING_OUT)}"
    assert {name: default_of(settings, name) for name in CALLING_OUT} == CALLING_OUT
    doc = (ROOT / "docs" / "egress.md").read_text()
    assert [name for name in CALLING_OUT if f"`{name}`" not in doc] == []
