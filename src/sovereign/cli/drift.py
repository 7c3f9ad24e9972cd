"""``sovereign drift report|baseline``: drift on live traffic of a running gateway (admin API).

- ``report [--json] [--chart PNG] [--cached]``: a table (signal, test, statistic, p-value, drifted,
  samples in the window / baseline) from ``GET /admin/drift``; ``--chart`` writes a PNG with one
  panel per signal, baseline vs window proportions per category or per PSI bin (needs matplotlib,
  from the mlops extra). Exit code 0 either way: drift is a finding, not a failure.
- ``baseline [--since 1h]``: make the last ``--since`` (default ``drift.window_s``) of traffic the
  baseline (``POST /admin/drift/baseline``).

Errors (exit 1, one line): no gateway at ``--url``, drift detection off (503), a bad ``--since``,
matplotlib missing for ``--chart``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sovereign.cli.common import ConfigOption, KeyOption, UrlOption, admin_call, admin_client, seconds, settings_from
from sovereign.extras import require

drift_app = typer.Typer(help="Drift of live traffic against a baseline.", no_args_is_help=True)
PANEL_CATEGORIES = 12  # categories drawn per panel; the rest are summed into "(rest)"
EFFECT = {"chi2": "chi2 (V)", "ks": "ks (D)", "psi": "psi"}  # the statistic each test reports


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" if value and abs(value) < 1e-3 else f"{value:.3f}"


def _table(report: dict[str, Any]) -> Table:
    baseline = report.get("baseline")
    title = "Drift: window of {:g} s vs baseline {}".format(
        report["window_s"], f"#{baseline['id']}" if baseline else "(none yet)")
    table = Table(title=title)
    for column in ("signal", "test", "statistic", "p-value", "drifted", "samples (window/baseline)"):
        table.add_column(column, no_wrap=column == "signal")
    for signal in report["signals"]:
        verdict = {"drift": "[bold red]yes[/]", "ok": "no", "insufficient": "[dim]insufficient[/]"}[signal["status"]]
        tests = signal["tests"] or [{"test": "chi2" if signal["kind"] == "categorical" else "ks",
                                     "statistic": None, "p_value": None}]
        for i, test in enumerate(tests):
            table.add_row(signal["signal"] if i == 0 else "", EFFECT.get(test["test"], test["test"]),
                          _fmt(test["statistic"]), _fmt(test["p_value"]), verdict if i == 0 else "",
                          f"{signal['window_n']}/{signal['baseline_n']}" if i == 0 else "")
    return table


def _panel_data(chart: dict[str, list[Any]]) -> tuple[list[str], list[float], list[float]]:
    labels, base, window = list(chart["labels"]), list(chart["baseline"]), list(chart["window"])
    if len(labels) > PANEL_CATEGORIES:
        keep = PANEL_CATEGORIES - 1
        labels = [*labels[:keep], "(rest)"]
        base = [*base[:keep], sum(base[keep:])]
        window = [*window[:keep], sum(window[keep:])]
    return labels, base, window


def write_chart(report: dict[str, Any], path: Path) -> None:
    """One bar panel per signal with data: baseline vs window proportions, drifted titles in red.

    Raises:
        MissingExtraError: matplotlib is not installed (the mlops extra).
    """
    require("matplotlib", extra="mlops", feature="the drift chart")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signals = [s for s in report["signals"] if s["chart"] and s["chart"]["labels"]]
    columns = 3
    rows = max(1, math.ceil(len(signals) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(signals):]:
        ax.axis("off")
    if not signals:
        axes[0][0].text(0.5, 0.5, "no traffic recorded yet", ha="center", va="center")
    for ax, signal in zip(axes.flat, signals, strict=False):
        labels, base, window = _panel_data(signal["chart"])
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], base, width=0.4, label="baseline", color="#8da0cb")
        ax.bar([i + 0.2 for i in x], window, width=0.4, label="window", color="#fc8d62")
        ax.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=7)
        stat = ", ".join(f"{EFFECT.get(t['test'], t['test'])}={_fmt(t['statistic'])}" for t in signal["tests"])
        ax.set_title(f"{signal['signal']} ({signal['status']}{': ' + stat if stat else ''})", fontsize=9,
                     color="red" if signal["detected"] else "black")
        ax.set_ylabel("proportion", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


@drift_app.command("report")
def report(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of a table.")] = False,
    chart: Annotated[Path | None, typer.Option("--chart", help="Write a PNG chart of every signal here.")] = None,
    cached: Annotated[bool, typer.Option("--cached", help="The last background check, not a fresh one.")] = False,
    config: ConfigOption = None,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Each signal's test, statistic, p-value and verdict: the window against the baseline."""
    with admin_client(settings_from(config), url, admin_key) as client:
        body = admin_call(client, "GET", "/admin/drift", params={"cached": str(cached).lower()})
    console = Console()
    if as_json:
        console.print_json(json.dumps(body))
    else:
        console.print(_table(body))
        drifted = body["drifted"]
        console.print(f"[bold red]drifted: {', '.join(drifted)}[/]" if drifted else "no drift detected")
    if chart is not None:
        write_chart(body, chart)
        console.print(f"chart written to {chart}")


@drift_app.command("baseline")
def baseline(
    since: Annotated[str | None, typer.Option(
        "--since", help="Traffic of the last SINCE (30m, 1h, 3600) becomes the baseline; default drift.window_s.",
    )] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Capture the recent window of live traffic as the drift baseline."""
    body: dict[str, Any] = {} if since is None else {"since": seconds(since)}
    with admin_client(settings_from(config), url, admin_key) as client:
        summary = admin_call(client, "POST", "/admin/drift/baseline", json=body)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(summary["n"].items()))
    Console().print(f"baseline #{summary['id']} captured ({counts or 'no signals'})")


def register(app: typer.Typer) -> None:
    app.add_typer(drift_app, name="drift")
