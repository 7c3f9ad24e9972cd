"""``sovereign ingest PATH...``: ingest document trees with a Rich progress bar and a summary.

Documents are ingested as one tenant: ``anonymous`` by default (what a gateway without API keys
serves), another with ``--tenant NAME`` (the tenant a gateway derives from an API key)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.rag.models import ANONYMOUS

TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant whose documents these are (an API key's "
                                           "tenant; default: anonymous, the no-key single user).")]


async def _run(paths: list[Path], collection: str | None, prune: bool, exclude: list[str], config: Path | None,
               store: str | None, tenant: str) -> None:
    from sovereign.rag.service import RagService

    settings = settings_from(config, rag={"store": store})
    console = Console()
    service = await RagService.open(settings)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[chunks]} chunks embedded, {task.fields[rate]:.1f}/s"),
                      TimeElapsedColumn(), console=console, transient=False) as bar:
            task = bar.add_task("files", total=None, chunks=0, rate=0.0)
            embedded = 0

            def progress(event: str, amount: int) -> None:
                nonlocal embedded
                if event == "files_total":
                    bar.update(task, total=amount)
                elif event == "file":
                    bar.advance(task, amount)
                elif event == "chunks_embedded":
                    embedded += amount
                    elapsed = bar.tasks[0].elapsed or 1e-9
                    bar.update(task, chunks=embedded, rate=embedded / elapsed)

            report = await service.ingest_paths(paths, collection, prune=prune, exclude=exclude, progress=progress,
                                                tenant=tenant)
    finally:
        await service.close()
    console.print(
        f"[green]added {report.added}[/], updated {report.updated}, unchanged {report.unchanged}, "
        f"removed {report.removed}, [red]failed {len(report.failed)}[/], skipped {sum(report.skipped.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(report.skipped.items())) or 'none'}); "
        f"{report.chunks_embedded} chunks embedded, {report.chunks_reused} reused, {report.seconds:.1f}s"
    )
    for path, reason in report.failed:
        console.print(f"  [red]failed[/] {path}: {reason}", markup=True, highlight=False)


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to ingest.")],
    collection: Annotated[str | None, typer.Option(help="Collection (default: rag.default_collection).")] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Remove documents whose files are gone.")] = False,
    exclude: Annotated[list[str] | None, typer.Option(help="Glob of file/dir names to skip (repeatable).")] = None,
    store: Annotated[str | None, typer.Option(help="Override rag.store (embedded or pgvector).")] = None,
    tenant: TenantOption = ANONYMOUS,
    config: ConfigOption = None,
) -> None:
    """Ingest documents (.txt .md .rst .html .pdf) into the document memory."""
    asyncio.run(_run(paths, collection, prune, exclude or [], config, store, tenant))


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
