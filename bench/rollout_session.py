"""A recorded rollout session: ``sovereign rollout start`` promoting a healthy candidate, then rolling
back a faulty one, with the time from breach to rollback measured.

Run: ``.venv/bin/python bench/rollout_session.py [--repeats 3] [--check-s 1]``; writes the
transcript to ``docs/rollout-session.md`` and the figures to ``bench/results/rollout.json``.

Set-up (all on 127.0.0.1, killed in ``finally``): the fault-injection engine (candidate ``cand``)
and ``sovereign serve`` whose model ``canary`` has the embedded engine (SmolLM2 on llama-server,
stable ``local``) and ``cand``; three client threads send 2-token chats from new users while a
rollout runs. The faulty candidate fails every fifth request (20 %). **Breach** is the moment the
candidate has served ``--min-requests`` (from then on its error ratio is 0.2 > 0.05, so the rule is
breached); **rollback** is the time of the controller's ``rollback`` event in the audit log. The
wait is bounded by ``rollout.check_s`` plus ``flags.sync_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from sovereign.backends.llama_process import free_port
from sovereign.testing.canary import canary_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready")


def load(url: str, stop: threading.Event, threads: int = 3) -> list[threading.Thread]:
    def run(k: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = 0
            while not stop.is_set():
                i += 1
                client.post(url + "/v1/chat/completions", json={
                    "model": "canary", "user": f"user-{k}-{i}", "max_tokens": 2,
                    "messages": [{"role": "user", "content": "Hi"}]})

    workers = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    return workers


def cli(gateway: str, *args: str) -> tuple[int, str]:
    shown = "$ sovereign rollout " + " ".join(args)
    done = subprocess.run([sys.executable, "-m", "sovereign", "rollout", *args, "--url", gateway],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "110"})
    return done.returncode, f"{shown}\n{done.stdout}{done.stderr}(exit {done.returncode})\n"


def breach_time(fault: str, min_requests: int, stop: threading.Event, out: dict[str, float]) -> None:
    """Poll the candidate's request count; record when it reaches ``min_requests`` (the breach)."""
    start = httpx.get(fault + "/_stats").json()["requests"]
    while not stop.is_set():
        if httpx.get(fault + "/_stats").json()["requests"] - start >= min_requests:
            out["breach"] = time.time()
            return
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="faulty rollouts to time")
    parser.add_argument("--check-s", type=float, default=1.0, help="rollout.check_s of the gateway")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rollout-session-"))
    fault_port, port = free_port(), free_port()
    fault, gateway = f"http://127.0.0.1:{fault_port}", f"http://127.0.0.1:{port}"
    (tmp / "sovereign.toml").write_text(canary_config(fault, check_s=args.check_s))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env.update(SOVEREIGN_CONFIG=str(tmp / "sovereign.toml"), SOVEREIGN_DATA_DIR=str(tmp / "data"))
    procs = [
        subprocess.Popen([sys.executable, "-m", "sovereign.testing.fault_engine", "--port", str(fault_port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "sovereign", "serve", "--port", str(port), "--log-level", "warning"],
                         env=env, stdout=(tmp / "gateway.log").open("wb"), stderr=subprocess.STDOUT),
    ]
    transcript = [f"# Rollout session, {time.strftime('%Y-%m-%d %H:%M')} UTC, on this 2-core machine\n",
                  "Recorded by `bench/rollout_session.py`: stable `local` is the embedded engine (SmolLM2-135M on "
                  "llama-server), candidate `cand` the fault-injection engine; three client threads send chats "
                  f"from new users; `rollout.check_s = {args.check_s}`, `flags.sync_s = 0.2`.\n"]
    figures: dict[str, Any] = {"check_s": args.check_s, "sync_s": 0.2, "breach_to_rollback_s": []}
    try:
        wait(fault + "/health", procs[0])
        wait(gateway + "/readyz", procs[1])
        stop = threading.Event()
        workers = load(gateway, stop)
        transcript.append("## 1. A healthy candidate is promoted through every stage\n\n```")
        began = time.time()
        code, text = cli(gateway, "start", "--route", "canary", "--candidate", "cand", "--steps", "10,50,100",
                         "--interval", "5s", "--min-requests", "10", "--force", "--wait", "--poll", "0.5s")
        figures["promotion_s"] = round(time.time() - began, 2)
        figures["promotion_exit"] = code
        transcript += [text, "```\n"]
        for attempt in range(args.repeats):
            code, text = cli(gateway, "abort", "--route", "canary")
            httpx.post(fault + "/_reset")
            httpx.post(fault + "/_fault", json={"mode": "status", "status": 500, "ratio": 0.2})
            seen: dict[str, float] = {}
            watcher_stop = threading.Event()
            watcher = threading.Thread(target=breach_time, args=(fault, 10, watcher_stop, seen), daemon=True)
            watcher.start()
            code, text = cli(gateway, "start", "--route", "canary", "--candidate", "cand", "--steps", "10,50,100",
                             "--interval", "60s", "--min-requests", "10", "--force", "--wait", "--poll", "0.5s")
            watcher_stop.set()
            events = httpx.get(gateway + "/admin/rollouts/route:canary").json()["events"]
            rollback = next(e["at"] for e in events if e["kind"] == "rollback")
            figures["breach_to_rollback_s"].append(round(rollback - seen["breach"], 3))
            figures.setdefault("rollback_exit", []).append(code)
            if attempt == 0:
                transcript += ["## 2. A candidate failing 20 % of its requests is rolled back within one interval\n",
                               "```", text, "```\n"]
        stop.set()
        for w in workers:
            w.join(timeout=60)
        code, text = cli(gateway, "status", "--route", "canary", "--verbose")
        transcript += ["## 3. `rollout status` after the rollback\n", "```", text, "```\n"]
        times = figures["breach_to_rollback_s"]
        figures["breach_to_rollback_median_s"] = statistics.median(times)
        transcript.append(f"Breach to rollback over {len(times)} faulty rollouts: median "
                          f"{statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
                          f"(bounded by check_s + sync_s = {args.check_s + 0.2:.1f} s).\n")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rollout.json").write_text(json.dumps(figures, indent=2) + "\n")
    (ROOT / "docs" / "rollout-session.md").write_text("\n".join(transcript))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
