"""``sovereign rollout start|status|pause|resume|promote|abort``: metric-gated canary rollouts.

The commands drive a running gateway's admin API (``--url``, ``--admin-key``); the gateway runs
the stages and judges them (:mod:`sovereign.flags.service`). A rollout is named by ``--route MODEL``
(with ``--candidate DEPLOYMENT`` to start one) or ``--flag NAME``.

Exit codes: 0 done; 1 an error (one line); with ``start --wait``: 3 rolled back or aborted, 4
paused (an inconclusive stage waits for an operator). ``start --gate-dataset FILE --gate-min
METRIC=VALUE`` makes the controller evaluate the candidate (:mod:`sovereign.evaluation`) before
``--gate-stage`` and abort the rollout when a bound is missed.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sovereign.cli.common import ConfigOption, KeyOption, UrlOption, admin_call, admin_client, seconds, settings_from
from sovereign.errors import InvalidRequestError
from sovereign.evaluation.gate import parse_bounds

rollout_app = typer.Typer(help="Canary rollouts gated on metrics.", no_args_is_help=True)
RouteOption = Annotated[str | None, typer.Option("--route", help="Model whose deployments are split.")]
FlagOption = Annotated[str | None, typer.Option("--flag", help="Flag rolled out instead of a deployment.")]
EXIT = {"promoted": 0, "rolled_back": 3, "aborted": 3, "paused": 4}
COLOURS = {"promoted": "green", "rolled_back": "red", "aborted": "red", "paused": "yellow"}
DEFAULT_STEPS = "10,25,50,75,100"


def target_of(route: str | None, flag: str | None) -> str:
    if bool(route) == bool(flag):
        raise InvalidRequestError("Name exactly one rollout: --route MODEL or --flag NAME.")
    return f"route:{route}" if route else f"flag:{flag}"


def _num(x: Any, unit: str = "") -> str:
    return "-" if x is None else f"{x:.3g}{unit}"


def analysis_table(rows: list[tuple[str, dict[str, Any]]], title: str) -> Table:
    """A table of arm figures: one row per ``(label, summary)`` (``ArmStats.summary`` shape)."""
    table = Table(title=title)
    for column in ("stage / arm", "requests", "errors", "error ratio", "p95", "p99", "TTFT p95"):
        table.add_column(column, justify="left" if column == "stage / arm" else "right")
    for label, s in rows:
        table.add_row(label, _num(s.get("requests")), _num(s.get("errors")), _num(s.get("error_ratio")),
                      _num(s.get("p95_s"), " s"), _num(s.get("p99_s"), " s"), _num(s.get("ttft_p95_s"), " s"))
    return table


def show(rollout: dict[str, Any], console: Console, *, verbose: bool = False) -> None:
    """One rollout: its state line, the analysis of each judged stage (from the audit log), the last check."""
    spec, state = rollout["spec"], rollout["state"]
    steps = spec["steps"]
    colour = COLOURS.get(state["status"], "cyan")
    console.print(f"[bold]{rollout['target']}[/] candidate [bold]{spec['candidate']}[/]: "
                  f"[{colour}]{state['status']}[/] at {state['percent']:g} % (step {state['step'] + 1}/{len(steps)}: "
                  f"{', '.join(f'{s:g}' for s in steps)}); interval {spec['interval_s']:g}s, "
                  f"min {spec['min_requests']} requests" + (f"; {state['reason']}" if state.get("reason") else ""))
    gate = state.get("gate") or {}
    if gate:
        bounds = ", ".join([f"{k} >= {v:g}" for k, v in spec["gate"]["minimum"].items()]
                           + [f"{k} <= {v:g}" for k, v in spec["gate"]["maximum"].items()])
        measured = ", ".join(f"{k} {v:g}" for k, v in (gate.get("metrics") or {}).items()
                             if k in {*spec["gate"]["minimum"], *spec["gate"]["maximum"]} and v is not None)
        console.print(f"evaluation gate before stage {gate['stage'] + 1} on {spec['gate']['dataset']}: "
                      f"[bold]{gate['status']}[/] ({bounds or 'no bounds'})" + (f"; measured {measured}" if measured
                                                                                else ""))
    rows: list[tuple[str, dict[str, Any]]] = []
    for event in rollout.get("events", []):
        detail = event["detail"]
        if isinstance(detail.get("candidate"), dict) and "stage_percent" in detail:
            stage = f"{detail['stage_percent']:g} % {event['kind']}"
            rows += [(stage + " candidate", detail["candidate"]), (stage + " stable", detail["stable"])]
    last = state.get("analysis") or {}
    if last.get("candidate") and state["status"] in ("progressing", "paused"):
        stage = f"now {last['stage_percent']:g} % ({last['decision']})"
        rows += [(stage + " candidate", last["candidate"]), (stage + " stable", last["stable"])]
    if rows:
        console.print(analysis_table(rows, "Analysis per stage: candidate vs stable"))
    if verbose:
        for event in rollout.get("events", []):
            console.print(f"  {time.strftime('%H:%M:%S', time.localtime(event['at']))} {event['actor']}: "
                          f"{event['kind']} {event['detail'].get('detail') or event['detail'].get('reason') or ''}")


@rollout_app.command("start")
def start(
    route: RouteOption = None,
    candidate: Annotated[str | None, typer.Option("--candidate", help="Candidate deployment of --route.")] = None,
    flag: FlagOption = None,
    steps: Annotated[str, typer.Option("--steps", help="Percents, comma-separated, ending at 100.")] = DEFAULT_STEPS,
    interval: Annotated[str, typer.Option("--interval", help="Time per stage (30s, 5m).")] = "5m",
    max_error_ratio: Annotated[float, typer.Option("--max-error-ratio")] = 0.05,
    max_p95: Annotated[str | None, typer.Option("--max-p95", help="Latency p95 limit, e.g. 5s.")] = "5s",
    max_p99: Annotated[str | None, typer.Option("--max-p99", help="Latency p99 limit, e.g. 8s.")] = "8s",
    max_ttft_p95: Annotated[str | None, typer.Option("--max-ttft-p95", help="TTFT p95 limit, e.g. 2s.")] = None,
    min_requests: Annotated[int, typer.Option("--min-requests", help="Candidate requests a stage needs.")] = 50,
    max_wait_intervals: Annotated[int, typer.Option("--max-wait-intervals")] = 3,
    prometheus_url: Annotated[str | None, typer.Option("--prometheus-url", help="Judge from Prometheus.")] = None,
    gate_dataset: Annotated[str | None, typer.Option(
        "--gate-dataset", help="Evaluate the candidate on this JSONL (a path on the gateway host) first.")] = None,
    gate_min: Annotated[list[str] | None, typer.Option("--gate-min", help="METRIC=VALUE the gate needs.")] = None,
    gate_max: Annotated[list[str] | None, typer.Option("--gate-max", help="METRIC=VALUE the gate allows.")] = None,
    gate_stage: Annotated[int, typer.Option("--gate-stage", min=1, help="Stage the gate precedes (1 = first).")] = 1,
    gate_model: Annotated[str | None, typer.Option("--gate-model", help="Model evaluated (default the route).")] = None,
    gate_answers: Annotated[bool, typer.Option("--gate-answers/--gate-retrieval-only")] = True,
    gate_limit: Annotated[int | None, typer.Option("--gate-limit", min=1, help="First N questions only.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print plan and current analysis only.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Do not ask for confirmation.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every audit event.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow: exit 0 promoted, 3 rolled back, 4 paused.")] = False,
    poll: Annotated[str, typer.Option("--poll", help="Status poll period with --wait.")] = "2s",
    config: ConfigOption = None,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Start moving --candidate (or --flag) through --steps, judged every stage against stable."""
    target = target_of(route, flag)
    if route and not candidate:
        raise InvalidRequestError("--route needs --candidate DEPLOYMENT.")
    try:
        step_list = [float(s) for s in steps.split(",") if s.strip()]
    except ValueError as exc:
        raise InvalidRequestError(f"--steps {steps!r}: write percents like 10,25,50,75,100.") from exc
    spec: dict[str, Any] = {
        "kind": "deployment" if route else "flag", "route": route, "candidate": candidate if route else flag,
        "steps": step_list, "interval_s": seconds(interval), "max_error_ratio": max_error_ratio,
        "max_p95_s": seconds(max_p95) if max_p95 else None, "max_p99_s": seconds(max_p99) if max_p99 else None,
        "max_ttft_p95_s": seconds(max_ttft_p95) if max_ttft_p95 else None, "min_requests": min_requests,
        "max_wait_intervals": max_wait_intervals, "prometheus_url": prometheus_url,
    }
    if gate_dataset:
        spec["gate"] = {"dataset": gate_dataset, "minimum": parse_bounds(gate_min or []),
                        "maximum": parse_bounds(gate_max or []), "before_stage": gate_stage - 1, "model": gate_model,
                        "answers": gate_answers, "limit": gate_limit}
    console = Console()
    settings = settings_from(config)
    with admin_client(settings, url, admin_key) as client:
        if dry_run:
            plan = admin_call(client, "POST", "/admin/rollouts", json={**spec, "dry_run": True})
            table = Table(title=f"Plan for {target} (dry run: nothing moves)")
            for column in ("stage", "candidate %", "judged after"):
                table.add_column(column)
            for stage in plan["plan"]:
                judged = stage["starts_after_s"] + spec["interval_s"]
                table.add_row(str(stage["step"] + 1), f"{stage['percent']:g}", f"{judged:g}s")
            console.print(table)
            analysis = plan["analysis"]
            console.print(analysis_table([("candidate", analysis["candidate"]), ("stable", analysis["stable"])],
                                         f"Current analysis (last {spec['interval_s']:g}s)"))
            return
        if not force:
            typer.confirm(f"Start rollout of {spec['candidate']} on {target} through {steps} %?", abort=True)
        rollout = admin_call(client, "POST", "/admin/rollouts", json=spec)
        show(rollout, console, verbose=verbose)
        if not wait:
            return
        seen = 0
        while True:
            time.sleep(seconds(poll))
            rollout = admin_call(client, "GET", f"/admin/rollouts/{target}")
            events = rollout.get("events", [])
            for event in events[seen:]:
                detail = event["detail"]
                why = detail.get("detail") or detail.get("reason") or ""
                console.print(f"{time.strftime('%H:%M:%S', time.localtime(event['at']))} [bold]{event['kind']}[/] "
                              f"at {detail.get('percent', '?')} %: {why}")
            seen = len(events)
            status = rollout["state"]["status"]
            if status in EXIT and not (status == "paused" and not rollout["state"].get("reason", "").startswith(
                    "inconclusive")):
                show(rollout, console, verbose=verbose)
                raise typer.Exit(EXIT[status])


@rollout_app.command("status")
def status(
    route: RouteOption = None,
    flag: FlagOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    config: ConfigOption = None,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Show rollouts (all, or one) with the analysis of every judged stage."""
    settings = settings_from(config)
    with admin_client(settings, url, admin_key) as client:
        if route or flag:
            rollouts = [admin_call(client, "GET", f"/admin/rollouts/{target_of(route, flag)}")]
        else:
            listed = admin_call(client, "GET", "/admin/rollouts")["data"]
            rollouts = [admin_call(client, "GET", f"/admin/rollouts/{r['target']}") for r in listed]
    console = Console()
    if as_json:
        console.print_json(data=rollouts)
        return
    if not rollouts:
        console.print("no rollouts")
    for rollout in rollouts:
        show(rollout, console, verbose=verbose)


def _action(action: str) -> Any:
    def run(route: RouteOption = None, flag: FlagOption = None, config: ConfigOption = None,
            url: UrlOption = None, admin_key: KeyOption = None) -> None:
        settings = settings_from(config)
        with admin_client(settings, url, admin_key) as client:
            rollout = admin_call(client, "POST", f"/admin/rollouts/{action}", json={"target": target_of(route, flag)})
        show(rollout, Console())

    run.__doc__ = {"pause": "Hold the split where it is; no stage moves until resume.",
                   "resume": "Continue a paused rollout (the current stage starts over).",
                   "promote": "Send 100 % to the candidate now.",
                   "abort": "Send all traffic back to stable now (rollback)."}[action]
    return run


for _name in ("pause", "resume", "promote", "abort"):
    rollout_app.command(_name)(_action(_name))
rollout_app.command("rollback", help="Same as abort.")(_action("abort"))


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")
