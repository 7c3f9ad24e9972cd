"""Feast with a Redis online store vs. a plain Redis hash for per-user online features (issue 18, part 5).

The question: do per-user/session online features (recent topics, last route, request counts for the
router) belong in Feast with its Redis online store, or would Sovereign read them straight from Redis?
This measures both against the same ``redis-server`` in the same run:

- footprint: Feast's side venv (``feast[redis]``; install seconds, site-packages MiB, distributions)
  next to Sovereign's own venv;
- cold start: ``import feast``, ``FeatureStore(repo_path=...)`` and the first online read, each in a
  fresh interpreter, next to ``import redis`` + first HGETALL;
- warm single-entity reads: ``store.get_online_features(...)`` vs. redis-py ``HGETALL`` of a hash per
  user, p50/p95/p99 over ~1,000 reads after a warm-up, interleaved so machine noise hits both alike.

The feature repo is throwaway (a temp dir): a parquet FileSource offline store, a ``user`` entity and a
``user_router_features`` view (recent_topics: string, last_route: string, requests_1h: int64),
materialized for ~10,000 users into a ``redis-server`` this script starts on 127.0.0.1 and a free port
(Sovereign's test helper, ``sovereign/testing/redis.py``) and stops at the end.

Run it with Sovereign's interpreter: ``.venv/bin/python bench/feast_probe.py`` makes the side venv once
(``bench/peer_venv.py``; default ``/tmp/feast-venv``, ``--venv``), then re-runs itself under the side
venv's python, which does the measuring. It prints one JSON object and writes
``bench/results/feast.json``. The measuring part stops by itself after ``--deadline`` seconds (300).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "feast.json"
INSTALL_RECORD = ".feast-probe-install.json"  # inside the side venv: how long its install took
FEATURE_VIEW = "user_router_features"
FEATURES = ["recent_topics", "last_route", "requests_1h"]
TOPICS = ["billing", "code", "legal", "travel", "health", "math", "sports", "music", "cooking", "hr", "sql", "ops"]
ROUTES = ["local-small", "local-large", "remote-fast", "remote-strong"]
# Feast's telemetry and any other "phone home" stays off: nothing outside the machine is needed.
QUIET_ENV = {"FEAST_USAGE": "False", "DO_NOT_TRACK": "1"}


class Deadline(Exception):
    """The measuring ran past --deadline."""


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))], 4)

    return {"n": len(ms), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_ms": round(statistics.fmean(ms), 4), "max_ms": round(ms[-1], 4)}


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _footprint(venv: Path) -> dict[str, Any]:
    """Size (MiB, ``du -sm``) and distribution names of a venv's site-packages."""
    site = _site_packages(venv)
    if not site.is_dir():
        return {"venv": str(venv), "missing": True}
    mib = int(subprocess.run(["du", "-sm", str(site)], capture_output=True, text=True, check=True).stdout.split()[0])
    sizes = {}  # distribution -> MiB of its files as its RECORD lists them (no .pyc written later)
    for info in site.glob("*.dist-info"):
        record = info / "RECORD"
        rows = csv.reader(record.read_text().splitlines()) if record.exists() else []
        name = info.name.split("-")[0].lower().replace("_", "-")
        sizes[name] = round(sum(int(r[2]) for r in rows if len(r) > 2 and r[2].isdigit()) / 2**20, 1)
    return {"venv": str(venv), "site_packages_mib": mib, "distributions": len(sizes), "_sizes": sizes}


# ---------------------------------------------------------------- bootstrap (Sovereign's interpreter)


def bootstrap(args: argparse.Namespace) -> int:
    """Make the side venv (once, timed) and re-run this file under its python."""
    sys.path.insert(0, str(HERE))
    from peer_venv import MARKER, peer_python

    venv = Path(args.venv)
    fresh = not (venv / MARKER).exists()
    started = time.perf_counter()
    python = peer_python(venv, ["feast[redis]"], label="feast")
    if python is None:
        print(json.dumps({"error": "feast[redis] could not be installed"}))
        return 1
    if fresh:
        (venv / INSTALL_RECORD).write_text(json.dumps({"install_s": round(time.perf_counter() - started, 1),
                                                       "spec": "feast[redis]", "venv": str(venv)}))
    with tempfile.TemporaryDirectory(prefix="feast-probe-sov-") as tmp:
        report = Path(tmp) / "sovereign.json"
        report.write_text(json.dumps({"sovereign_core": _sovereign_core(), "feast_in_sovereign_venv": _coinstall()}))
        cmd = [str(python), __file__, "--measure", "--venv", str(venv), "--users", str(args.users),
               "--reads", str(args.reads), "--deadline", str(args.deadline), "--sovereign-venv", sys.prefix,
               "--sovereign-report", str(report)]
        return subprocess.run(cmd, env={**os.environ, **QUIET_ENV}, timeout=args.deadline + 60).returncode


def _sovereign_core() -> dict[str, Any]:
    """Sovereign's core install (no extras): its dependency closure in this venv, distributions and MiB."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    seen: dict[str, float] = {}  # distribution -> MiB
    visited: set[tuple[str, frozenset[str]]] = set()  # (distribution, extras) already expanded
    todo: list[tuple[str, frozenset[str]]] = [("sovereign", frozenset())]
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        if (key, extras) in visited:
            continue
        visited.add((key, extras))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        seen.setdefault(key, round(sum((f.size or 0) for f in dist.files or []) / 2**20, 1))
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                todo.append((req.name, frozenset(req.extras)))
    seen.pop("sovereign", None)
    return {"distributions": len(seen), "mib": round(sum(seen.values()), 1), "_names": sorted(seen),
            "note": "dependency closure of Sovereign without extras, sizes from each RECORD"}


def _coinstall() -> dict[str, Any]:
    """What ``pip install feast[redis]`` would change in Sovereign's venv (``--dry-run --report``)."""
    from importlib.metadata import PackageNotFoundError, version

    with tempfile.TemporaryDirectory(prefix="feast-probe-pip-") as tmp:
        report = Path(tmp) / "report.json"
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                            "feast[redis]"], capture_output=True, check=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as exc:
            return {"error": f"pip --dry-run failed: {exc}"}
        items = json.loads(report.read_text()).get("install", [])
    new, changed = [], {}
    for item in items:
        name, want = item["metadata"]["name"], item["metadata"]["version"]
        try:
            have = version(name)
        except PackageNotFoundError:
            new.append(f"{name}=={want}")
            continue
        if have != want:
            changed[name] = f"{have} -> {want}"
    return {"new": sorted(new), "replaced": changed}


# ---------------------------------------------------------------- measuring (the side venv's interpreter)


def _redis_helper() -> Any:
    """``sovereign.testing.redis`` loaded by path (stdlib only; Sovereign is not installed here)."""
    spec = importlib.util.spec_from_file_location("_sov_redis", ROOT / "src" / "sovereign" / "testing" / "redis.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_sov_redis"] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


def _write_repo(repo: Path, redis_port: int, users: int) -> Path:
    """feature_store.yaml + a parquet of ``users`` rows; returns the parquet path."""
    import pandas as pd

    rng = random.Random(18)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    frame = pd.DataFrame({
        "user_id": list(range(users)),
        "recent_topics": [",".join(rng.sample(TOPICS, 3)) for _ in range(users)],
        "last_route": [rng.choice(ROUTES) for _ in range(users)],
        "requests_1h": [rng.randint(0, 120) for _ in range(users)],
        "event_timestamp": [now - pd.Timedelta(seconds=rng.randint(0, 3000)) for _ in range(users)],
    })
    data = repo / "data" / "user_features.parquet"
    data.parent.mkdir(parents=True)
    frame.to_parquet(data)
    (repo / "feature_store.yaml").write_text(
        "project: sovereign_probe\n"
        f"registry: {repo / 'data' / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: redis\n"
        f"  connection_string: \"127.0.0.1:{redis_port}\"\n"
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    return data


def _definitions(data: Path) -> list[Any]:
    from datetime import timedelta

    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64, String

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="user_features_source", path=str(data), timestamp_field="event_timestamp")
    view = FeatureView(
        name=FEATURE_VIEW, entities=[user], ttl=timedelta(days=1), online=True, source=source,
        schema=[Field(name="user_id", dtype=Int64), Field(name="recent_topics", dtype=String),
                Field(name="last_route", dtype=String), Field(name="requests_1h", dtype=Int64)],
    )
    return [user, source, view]


COLD_FEAST = r"""
import json, sys, time
t0 = time.perf_counter()
import feast
t1 = time.perf_counter()
store = feast.FeatureStore(repo_path=sys.argv[1])
t2 = time.perf_counter()
out = store.get_online_features(features=json.loads(sys.argv[2]), entity_rows=[{"user_id": 7}]).to_dict()
t3 = time.perf_counter()
assert out["last_route"][0] is not None, out
print(json.dumps({"import_feast_s": t1 - t0, "feature_store_init_s": t2 - t1, "first_read_s": t3 - t2}))
"""

COLD_REDIS = r"""
import json, sys, time
t0 = time.perf_counter()
import redis
t1 = time.perf_counter()
client = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), decode_responses=True)
got = client.hgetall("sov:user:7")
t2 = time.perf_counter()
assert got["last_route"], got
print(json.dumps({"import_redis_s": t1 - t0, "client_and_first_read_s": t2 - t1}))
"""

COLD_BARE = "pass"


def _fresh(code: str, *argv: str) -> tuple[float, dict[str, float]]:
    """Run ``code`` in a fresh interpreter; (wall seconds including interpreter start, its JSON line)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **QUIET_ENV})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold-start child failed: {done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return wall, (json.loads(lines[-1]) if lines else {})


def _median_of(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs) * 1000, 1)


def measure(args: argparse.Namespace) -> int:
    def on_alarm(signum: int, frame: Any) -> None:
        raise Deadline(f"measuring ran past {args.deadline} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline)
    started = time.perf_counter()
    result: dict[str, Any] = {"bench": "feast", "issue": "18 part 5"}
    try:
        with tempfile.TemporaryDirectory(prefix="feast-probe-") as tmp:
            helper = _redis_helper()
            server = helper.RedisProcess(Path(tmp) / "redis")
            server.start()
            try:
                result |= _measure_with(args, Path(tmp), server.port)
            finally:
                server.stop()
    except Deadline as exc:
        result["error"] = str(exc)
    finally:
        signal.alarm(0)
    result["total_s"] = round(time.perf_counter() - started, 1)
    result |= _environment(args)
    text = json.dumps(result, indent=2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    print(text)
    return 1 if "error" in result else 0


def _measure_with(args: argparse.Namespace, tmp: Path, port: int) -> dict[str, Any]:
    import redis
    from feast import FeatureStore

    repo = tmp / "repo"
    data = _write_repo(repo, port, args.users)
    out: dict[str, Any] = {"users": args.users, "redis_port": port}

    store = FeatureStore(repo_path=str(repo))
    t = time.perf_counter()
    store.apply(_definitions(data))
    out["apply_s"] = round(time.perf_counter() - t, 2)

    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    t = time.perf_counter()
    store.materialize(start_date=now - timedelta(hours=2), end_date=now + timedelta(minutes=1))
    out["materialize_s"] = round(time.perf_counter() - t, 2)

    # Sovereign's alternative: one Redis hash per user, the same values, written with a pipeline.
    import pandas as pd

    frame = pd.read_parquet(data)
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    t = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for row in frame.itertuples(index=False):
        pipe.hset(f"sov:user:{row.user_id}", mapping={"recent_topics": row.recent_topics,
                                                      "last_route": row.last_route,
                                                      "requests_1h": int(row.requests_1h)})
    pipe.execute()
    out["plain_redis_write_s"] = round(time.perf_counter() - t, 2)
    info = client.info("memory")
    out["redis_used_memory_mib_both_layouts"] = round(info["used_memory"] / 2**20, 1)
    out["redis_keys"] = client.dbsize()

    refs = [f"{FEATURE_VIEW}:{name}" for name in FEATURES]
    expected = frame.set_index("user_id")

    def feast_read(uid: int) -> dict[str, Any]:
        return store.get_online_features(features=refs, entity_rows=[{"user_id": uid}]).to_dict()

    def redis_read(uid: int) -> dict[str, str]:
        return client.hgetall(f"sov:user:{uid}")

    # Both give the same values (checked on a sample), so the timings compare like with like.
    for uid in random.Random(1).sample(range(args.users), 50):
        via_feast, via_redis = feast_read(uid), redis_read(uid)
        want = expected.loc[uid]
        assert via_feast["recent_topics"][0] == via_redis["recent_topics"] == want.recent_topics, uid
        assert via_feast["last_route"][0] == via_redis["last_route"] == want.last_route, uid
        assert via_feast["requests_1h"][0] == int(via_redis["requests_1h"]) == int(want.requests_1h), uid
    out["values_agree"] = True

    rng = random.Random(2)
    for _ in range(200):  # warm-up: registry cache, connection pools, code paths
        uid = rng.randrange(args.users)
        feast_read(uid)
        redis_read(uid)
    feast_s: list[float] = []
    redis_s: list[float] = []
    clock = time.perf_counter
    for _ in range(args.reads):  # interleaved: noise on the shared CPUs hits both alike
        uid = rng.randrange(args.users)
        t0 = clock()
        feast_read(uid)
        t1 = clock()
        redis_read(uid)
        t2 = clock()
        feast_s.append(t1 - t0)
        redis_s.append(t2 - t1)
    feast_stats, redis_stats = _percentiles(feast_s), _percentiles(redis_s)
    out["warm_single_entity_read"] = {
        "feast_get_online_features": feast_stats,
        "redis_py_hgetall": redis_stats,
        "feast_over_redis_p50": round(feast_stats["p50_ms"] / redis_stats["p50_ms"], 1),
        "feast_p99_under_10ms": feast_stats["p99_ms"] < 10,
    }

    # Batch of 50 users in one call, the shape a router would use only for offline scoring.
    batch_feast: list[float] = []
    batch_redis: list[float] = []
    for _ in range(50):
        uids = [rng.randrange(args.users) for _ in range(50)]
        t0 = clock()
        store.get_online_features(features=refs, entity_rows=[{"user_id": u} for u in uids]).to_dict()
        t1 = clock()
        pipe = client.pipeline(transaction=False)
        for u in uids:
            pipe.hgetall(f"sov:user:{u}")
        pipe.execute()
        t2 = clock()
        batch_feast.append(t1 - t0)
        batch_redis.append(t2 - t1)
    out["warm_batch_50_read"] = {"feast_get_online_features": _percentiles(batch_feast),
                                 "redis_py_pipeline_hgetall": _percentiles(batch_redis)}

    # Cold start, each in a fresh interpreter (5 runs, medians).
    bare = [_fresh(COLD_BARE)[0] for _ in range(3)]
    feast_runs = [_fresh(COLD_FEAST, str(repo), json.dumps(refs)) for _ in range(5)]
    redis_runs = [_fresh(COLD_REDIS, str(port)) for _ in range(5)]
    out["cold_start_ms_median"] = {
        "bare_interpreter_wall": round(statistics.median(bare) * 1000, 1),
        "feast": {"import_feast": _median_of([r for _, r in feast_runs], "import_feast_s"),
                  "feature_store_init": _median_of([r for _, r in feast_runs], "feature_store_init_s"),
                  "first_online_read": _median_of([r for _, r in feast_runs], "first_read_s"),
                  "process_wall": round(statistics.median(w for w, _ in feast_runs) * 1000, 1)},
        "redis_py": {"import_redis": _median_of([r for _, r in redis_runs], "import_redis_s"),
                     "client_and_first_read": _median_of([r for _, r in redis_runs], "client_and_first_read_s"),
                     "process_wall": round(statistics.median(w for w, _ in redis_runs) * 1000, 1)},
    }
    return out


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    side = _footprint(Path(sys.prefix))
    own = _footprint(Path(args.sovereign_venv)) if args.sovereign_venv else {"missing": True}
    record = Path(sys.prefix) / INSTALL_RECORD
    side["install_s"] = json.loads(record.read_text())["install_s"] if record.exists() else None
    if "_sizes" in side:
        biggest = sorted(side["_sizes"].items(), key=lambda kv: -kv[1])[:10]
        side["largest_distributions_mib"] = dict(biggest)
    if "_sizes" in side and "_sizes" in own:
        extra = {n: mib for n, mib in side["_sizes"].items() if n not in own["_sizes"]}
        side["not_in_sovereign_venv"] = {"distributions": len(extra), "mib": round(sum(extra.values()), 1),
                                         "names": dict(sorted(extra.items(), key=lambda kv: -kv[1]))}
    if args.sovereign_report:
        sov = json.loads(Path(args.sovereign_report).read_text())
        core = sov["sovereign_core"]
        core_names = set(core.pop("_names", []))
        if "_sizes" in side:
            extra = {n: mib for n, mib in side["_sizes"].items() if n not in core_names}
            side["not_in_sovereign_core"] = {"distributions": len(extra), "mib": round(sum(extra.values()), 1)}
        own["core_without_extras"] = core
        side["pip_install_into_sovereign_venv_would"] = sov["feast_in_sovereign_venv"]
    side.pop("_sizes", None)
    own.pop("_sizes", None)
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "footprint": {"feast_side_venv": side, "sovereign_venv": own},
        "versions": {"python": platform.python_version(), "feast": version("feast"), "redis_py": version("redis"),
                     "hiredis": _maybe_version("hiredis"), "pandas": version("pandas"),
                     "pyarrow": version("pyarrow"), "redis_server": redis_version},
        "machine": {"cpus": os.cpu_count(), "note": "shared CPUs; reads interleaved so noise hits both alike"},
    }


def _maybe_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default="/tmp/feast-venv", help="the side venv with feast[redis]")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=1_000)
    parser.add_argument("--deadline", type=int, default=300, help="seconds the measuring may take")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sovereign-venv", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sovereign-report", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return measure(args) if args.measure else bootstrap(args)


if __name__ == "__main__":
    sys.exit(main())
