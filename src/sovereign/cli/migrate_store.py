"""``sovereign migrate-store``: copy a collection from the embedded store to pgvector (vectors included)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.rag.models import ANONYMOUS


async def copy_collection(source: object, target: object, collection: str, batch: int = 20, *,
                          tenant: str = ANONYMOUS) -> tuple[int, int]:
    """Copy every document of ``tenant``'s ``collection`` (chunks and vectors, no re-embedding; the
    documents keep their tenant); returns (docs, chunks).

    Documents already in the target with the same content hash are skipped, so a re-run resumes.
    """
    from sovereign.rag.stores.base import VectorStore

    assert isinstance(source, VectorStore) and isinstance(target, VectorStore)
    known = await target.known_documents(collection, tenant=tenant)
    docs = chunks = 0
    pending = []
    async for doc, doc_chunks, vectors in source.iter_documents(collection, tenant=tenant):
        if known.get(doc.path, ("", ""))[1] == doc.content_hash:
            continue
        pending.append((doc, doc_chunks, vectors))
        docs += 1
        chunks += len(doc_chunks)
        if len(pending) >= batch:
            await target.upsert_documents(pending)
            pending = []
    await target.upsert_documents(pending)
    await target.flush()
    return docs, chunks


async def _run(collection: str | None, tenant: str, config: Path | None) -> None:
    from sovereign.errors import NotFoundError
    from sovereign.rag.stores import build_store

    settings = settings_from(config)
    name = collection or settings.rag.default_collection
    source = build_store(settings, "embedded")
    target = build_store(settings, "pgvector")
    await source.open()
    try:
        if name not in await source.collections(tenant=tenant):
            raise NotFoundError(f"The embedded store has no collection {name!r} of tenant {tenant!r}.",
                                param="collection")
        await target.open()
        try:
            docs, chunks = await copy_collection(source, target, name, tenant=tenant)
        finally:
            await target.close()
    finally:
        await source.close()
    Console().print(f"copied {docs} documents ({chunks} chunks) of {name!r} to pgvector")


def migrate_store(
    collection: Annotated[str | None, typer.Option(help="Collection (default: rag.default_collection).")] = None,
    tenant: Annotated[str, typer.Option(help="Whose collection (default: the single-user tenant).")] = ANONYMOUS,
    config: ConfigOption = None,
) -> None:
    """Copy a tenant's collection from the embedded store to pgvector (needs rag.pg_dsn_env)."""
    asyncio.run(_run(collection, tenant, config))


def register(app: typer.Typer) -> None:
    app.command("migrate-store")(migrate_store)
