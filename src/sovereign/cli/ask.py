"""``sovereign ask "question"``: a cited answer from the document memory and the embedded model, over one
tenant's documents (``--tenant``, default ``anonymous``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.cli.ingest import TenantOption
from sovereign.rag.models import ANONYMOUS


async def _run(question: str, collection: str | None, top_k: int | None, max_tokens: int, config: Path | None,
               store: str | None, tenant: str) -> None:
    from sovereign.backends.registry import default_engine
    from sovereign.rag.answer import RagChatBackend
    from sovereign.rag.service import RagService
    from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

    settings = settings_from(config, rag={"store": store})
    console = Console()
    service = await RagService.open(settings)
    try:
        engine = default_engine(settings)
        rag = RagChatBackend(lambda: engine, service.retriever_for(tenant),
                             collection=collection or settings.rag.default_collection,
                             top_k=top_k if top_k is not None else settings.rag.top_k, answer_tokens=max_tokens,
                             require_collection=True)
        await rag.ensure_collection()  # bad input fails before the model loads
    except BaseException:
        await service.close()
        raise
    try:
        with console.status("loading model..."):
            await engine.start()
        request = GenerationRequest(model=rag.name, messages=(ChatMessage("user", question),),
                                    sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0))
        metadata: dict[str, Any] = {}
        async for chunk in rag.stream(request):
            console.print(chunk.text, end="", markup=False, highlight=False, soft_wrap=True)
            if chunk.finish_reason is not None:
                metadata = chunk.metadata or {}
        console.print()
    finally:
        await engine.close()
        await service.close()
    console.print("\n[bold]Sources[/]")
    for n, source in enumerate(metadata.get("sources", []), 1):
        heading = f" — {source['heading']}" if source["heading"] and source["heading"] != source["title"] else ""
        console.print(f"[{n}] {source['title']}{heading}  {source['path']}  ({source['chunk_id']}, "
                      f"score {source['score']:.4f})", markup=False, highlight=False)


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[str | None, typer.Option(help="Collection (default: rag.default_collection).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Chunks retrieved.")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Answer length in tokens.")] = 256,
    store: Annotated[str | None, typer.Option(help="Override rag.store (embedded or pgvector).")] = None,
    agent: Annotated[bool, typer.Option("--agent", help="Answer with the multi-agent pipeline (nodes shown live).")]
    = False,
    tenant: TenantOption = ANONYMOUS,
    config: ConfigOption = None,
) -> None:
    """Answer a question from your documents, with numbered citations."""
    if agent:
        from sovereign.agents.cli_view import run_agent_view

        settings = settings_from(config, rag={"store": store})
        asyncio.run(run_agent_view(question, settings, collection=collection, max_tokens=max_tokens, tenant=tenant))
        return
    asyncio.run(_run(question, collection, top_k, max_tokens, config, store, tenant))


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
