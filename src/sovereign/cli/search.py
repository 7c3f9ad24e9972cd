"""``sovereign search "query"``: ranked chunks (hybrid BM25 + vector, RRF) with source and score, from one
tenant's documents (``--tenant``, default ``anonymous``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.cli.ingest import TenantOption
from sovereign.rag.models import ANONYMOUS


async def _run(query: str, top_k: int, collection: str | None, path_glob: str | None, config: Path | None,
               store: str | None, tenant: str) -> None:
    from sovereign.rag.service import RagService

    service = await RagService.open(settings_from(config, rag={"store": store}))
    try:
        hits = await service.retriever_for(tenant).search(query, top_k=top_k, collection=collection,
                                                          path_glob=path_glob)
    finally:
        await service.close()
    console = Console()
    if not hits:
        console.print("no results")
    for n, hit in enumerate(hits, 1):
        heading = f" — {hit.heading}" if hit.heading and hit.heading != hit.title else ""
        console.print(f"[bold]{n}.[/] [cyan]{hit.title}{heading}[/] score {hit.score:.4f}", highlight=False)
        console.print(f"   {hit.path} [dim]({hit.chunk_id})[/]", highlight=False)
        snippet = " ".join(hit.text.split())[:240]
        console.print(f"   {snippet}", markup=False, highlight=False)


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Chunks to show.")] = 5,
    collection: Annotated[str | None, typer.Option(help="Search one collection (default: all).")] = None,
    path_glob: Annotated[str | None, typer.Option(help="Only documents whose path matches this glob.")] = None,
    store: Annotated[str | None, typer.Option(help="Override rag.store (embedded or pgvector).")] = None,
    tenant: TenantOption = ANONYMOUS,
    config: ConfigOption = None,
) -> None:
    """Search the document memory."""
    asyncio.run(_run(query, top_k, collection, path_glob, config, store, tenant))


def register(app: typer.Typer) -> None:
    app.command("search")(search)
