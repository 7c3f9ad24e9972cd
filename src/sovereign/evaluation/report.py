"""Showing evaluation results: a Rich table (one column per run, so a candidate sits beside the
stable deployment), the JSON file, and a PNG chart (matplotlib, the ``mlops`` extra)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from sovereign.errors import ConfigError
from sovereign.evaluation.scoring import ANSWER_METRICS, LATENCY_METRICS, RETRIEVAL_METRICS
from sovereign.extras import require


def run_label(result: dict[str, Any]) -> str:
    """``model`` or ``model@deployment`` of a result dict."""
    params = result.get("params", {})
    return params.get("model", "?") + (f"@{params['deployment']}" if params.get("deployment") else "")


def table(results: Sequence[dict[str, Any]], title: str = "Evaluation") -> Table:
    """Metrics (rows) by run (columns); a second and later run show their difference to the first."""
    out = Table(title=title)
    out.add_column("metric", no_wrap=True)
    for result in results:
        out.add_column(f"{run_label(result)}\n{result['dataset']['version']}", justify="right")
    for name in (*RETRIEVAL_METRICS, *ANSWER_METRICS, *LATENCY_METRICS):
        values = [r["metrics"].get(name) for r in results]
        if all(v is None for v in values):
            continue
        cells = []
        for i, value in enumerate(values):
            cell = "—" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")
            base = values[0]
            if i and value is not None and base is not None and value != base:
                colour = "green" if (value > base) != name.endswith(("_ms", "_s")) else "red"
                cell += f" [{colour}]({value - base:+.3f})[/]"
            cells.append(cell)
        out.add_row(name, *cells)
    return out


def write_json(result: dict[str, Any], path: Path) -> None:
    """The result as indented JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def load_result(path: Path) -> dict[str, Any]:
    """A result written by :func:`write_json`. Raises ConfigError when it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable evaluation result ({exc}).") from exc
    if not isinstance(data, dict) or data.get("object") != "eval.result":
        raise ConfigError(f"{path}: not an evaluation result (object 'eval.result').")
    return data


def chart(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """A PNG: retrieval and answer quality (bars per run) and answer latency per case (box per run).

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'sovereign[mlops]'``).
    """
    require("matplotlib", extra="mlops", feature="an evaluation chart")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in (*RETRIEVAL_METRICS, *ANSWER_METRICS) if any(r["metrics"].get(n) is not None for r in results)]
    fig, (quality, latency) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(1, len(results))
    for i, result in enumerate(results):
        xs = [j + i * width for j in range(len(names))]
        quality.bar(xs, [result["metrics"].get(n) or 0.0 for n in names], width, label=run_label(result))
    quality.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(names))], names, rotation=30,
                       ha="right")
    quality.set_ylim(0, 1)
    quality.set_title(f"quality on {results[0]['dataset']['path'].rsplit('/', 1)[-1]} "
                      f"({results[0]['dataset']['cases']} questions)")
    quality.legend()
    seconds = [[c["latency_s"] for c in r["cases"] if "latency_s" in c] for r in results]
    if any(seconds):
        latency.boxplot([s or [0.0] for s in seconds], tick_labels=[run_label(r) for r in results])
        latency.set_title("answer latency (s)")
    else:
        latency.boxplot([[c["search_ms"] for c in r["cases"]] for r in results],
                        tick_labels=[run_label(r) for r in results])
        latency.set_title("search latency (ms)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
