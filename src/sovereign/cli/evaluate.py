"""``sovereign eval run|compare|promote|check``: evaluate a model on a JSONL dataset through a running
gateway, compare runs side by side, and promote registered versions in MLflow.

``run`` exits 0 when every ``--min``/``--max`` bound is met, 3 when one is missed (the result is
still written and logged), 1 on an error (nothing is logged to MLflow).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sovereign.cli.common import ConfigOption, KeyOption, UrlOption, settings_from
from sovereign.config import resolve_secret
from sovereign.evaluation.dataset import describe, load_dataset
from sovereign.evaluation.gate import failures, parse_bounds
from sovereign.evaluation.report import chart, load_result, table, write_json
from sovereign.evaluation.runner import EvalConfig, EvalResult, run_eval
from sovereign.evaluation.targets import GatewayTarget
from sovereign.evaluation.tracking import CHAMPION, Tracker

eval_app = typer.Typer(help="Evaluate models on your own questions; track runs in MLflow.", no_args_is_help=True)
log = logging.getLogger("sovereign.eval")
DatasetArgument = Annotated[Path, typer.Argument(help="JSONL dataset (one {\"question\": ...} per line).")]
MinOption = Annotated[list[str] | None, typer.Option("--min", help="METRIC=VALUE lower bound, repeatable "
                                                                     "(e.g. hit_at_5=0.8).")]
MaxOption = Annotated[list[str] | None, typer.Option("--max", help="METRIC=VALUE upper bound (answer_p95_s=5).")]
GATE_MISSED = 3


async def _run(dataset_path: Path, config: EvalConfig, target: GatewayTarget, limit: int | None,
               console: Console) -> EvalResult:
    dataset = load_dataset(dataset_path, limit)
    try:
        if console.is_terminal:
            columns = (TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, console=console, transient=True) as bar:
                task = bar.add_task("eval", total=len(dataset.cases))
                return await run_eval(dataset, config, target, lambda done, _total: bar.update(task, completed=done))

        def line(done: int, total: int) -> None:  # piped or logged: a plain line every 10 questions
            if done == total or done % 10 == 0:
                print(f"eval: {done}/{total} questions", file=sys.stderr, flush=True)

        return await run_eval(dataset, config, target, line)
    finally:
        await target.close()


@eval_app.command("run")
def run(
    dataset: DatasetArgument,
    model: Annotated[str, typer.Option("--model", "-m", help="The model that answers (any served name).")],
    deployment: Annotated[str | None, typer.Option(help="Pin one deployment (admin key).")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection searched (default: all).")] = None,
    answers: Annotated[bool, typer.Option("--answers/--no-answers", help="Also generate and check answers.")] = True,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Answer budget (default eval.max_tokens).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N questions only.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for eval.json, metrics.json, eval.png "
                                                  "(eval-runs/TIME).")] = None,
    draw: Annotated[bool, typer.Option("--chart/--no-chart", help="Write eval.png (matplotlib).")] = True,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run to MLflow.")] = False,
    register: Annotated[bool, typer.Option(help="Register the run as a version of sovereign.MODEL "
                                                "(alias candidate); implies --mlflow.")] = False,
    minimum: MinOption = None,
    maximum: MaxOption = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Score retrieval (hit@k, MRR, nDCG@10) and answers (grounded rate, citation precision, match)."""
    bounds_min, bounds_max = parse_bounds(minimum or []), parse_bounds(maximum or [])
    settings = settings_from(config)
    key = api_key or (resolve_secret(settings.server.admin_keys_env) or "").split(",")[0].strip() or None
    target = GatewayTarget(url or f"http://{settings.server.host}:{settings.server.port}", key)
    run_config = EvalConfig(model=model, deployment=deployment, collection=collection, answers=answers,
                            max_tokens=max_tokens or settings.eval.max_tokens,
                            support_threshold=settings.agents.support_threshold)
    console = Console()
    tracker = Tracker.from_settings(settings) if mlflow or register else None  # fails early without the extra
    result = asyncio.run(_run(dataset, run_config, target, limit, console)).to_dict()
    folder = out or Path("eval-runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    files = [folder / "eval.json", folder / "metrics.json"]
    write_json(result, files[0])
    write_json({"dataset": result["dataset"]["version"], **result["metrics"]}, files[1])  # flat: dvc metrics
    if draw:
        files.append(chart([result], folder / "eval.png"))
    console.print(table([result], title=f"{dataset.name} ({result['dataset']['version']})"))
    console.print(f"wrote {', '.join(str(f) for f in files)}")
    if tracker is not None:
        run_id = tracker.log_run(result, files)
        console.print(f"MLflow run {run_id} in {tracker.uri}")
        if register:
            version = tracker.register(run_id, result)
            console.print(f"registered sovereign.{model} version {version} (alias candidate)")
    missed = failures(result["metrics"], bounds_min, bounds_max)
    if missed:
        console.print(f"[red]bounds missed:[/] {'; '.join(missed)}")
        raise typer.Exit(GATE_MISSED)


@eval_app.command("compare")
def compare(
    results: Annotated[list[Path], typer.Argument(help="eval.json files; the first is the reference.")],
    draw: Annotated[Path | None, typer.Option("--chart", help="Also write this PNG.")] = None,
) -> None:
    """Runs side by side (e.g. the candidate deployment against stable), differences to the first."""
    loaded = [load_result(p) for p in results]
    Console().print(table(loaded, title="Evaluation comparison"))
    if draw is not None:
        Console().print(f"wrote {chart(loaded, draw)}")


@eval_app.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help="Gateway model (registered as sovereign.MODEL).")],
    version: Annotated[str, typer.Argument(help="Registered version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = CHAMPION,
    reason: Annotated[str, typer.Option(help="Why (kept with the promotion run).")] = "",
    config: ConfigOption = None,
) -> None:
    """Move an alias (champion) to a registered version; the move is logged as an MLflow run."""
    done = Tracker.from_settings(settings_from(config)).promote(model, version, alias, reason=reason)
    Console().print(f"sovereign.{model}: {alias} -> v{version} (was {done['previous'] or 'unset'}); "
                    f"logged as run {done['run_id']}")


@eval_app.command("check")
def check(dataset: DatasetArgument) -> None:
    """Validate a dataset and print its version (SHA-256 of its bytes)."""
    info = describe(load_dataset(dataset))
    Console().print(f"{dataset}: {info['cases']} questions OK ({info['with_answer']} with answers, "
                    f"{info['with_pages']} with pages), sha256 {info['sha256']}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
