"""Document memory over HTTP: ingest, list, delete documents; hybrid search.

``POST /v1/documents`` takes JSON: either ``path`` (a server-side file or directory that must lie
under one of ``rag.allowed_roots``; anything else is 403) or ``files`` (uploads as
``{"filename", "content_base64"}``; stored under the logical path ``upload/<filename>``), plus
optional ``collection`` and ``prune``. It answers the ingestion report. ``GET /v1/documents``
lists documents, ``DELETE /v1/documents/{id}`` removes one (404 when unknown), ``POST /v1/search``
returns ranked chunks with RRF scores and the collection's ``index_version``.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sovereign.errors import EngineUnavailableError, InvalidRequestError, PermissionDeniedError
from sovereign.rag.ingest import SourceFile
from sovereign.rag.service import RagService
from sovereign.server.state import get_state, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])


class UploadedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content_base64: str


class IngestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = None
    files: list[UploadedFile] | None = None
    collection: str | None = None
    prune: bool = False


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str
    top_k: int | None = None
    collection: str | None = None
    path_glob: str | None = None


def _service(request: Request) -> RagService:
    service = get_state(request).services.get("rag")
    if service is None:
        raise EngineUnavailableError("Document memory is not available on this server.")
    return service


def _allowed(path: str, roots: list[Path]) -> Path:
    """The resolved ``path`` if it lies under an allowed root. Raises PermissionDeniedError."""
    resolved = Path(path).expanduser().resolve()
    for root in roots:
        if resolved.is_relative_to(Path(root).expanduser().resolve()):
            return resolved
    raise PermissionDeniedError(
        f"{path} is outside the allowed roots; add its directory to rag.allowed_roots to ingest it.",
        param="path",
    )


@router.post("/v1/documents")
async def ingest_documents(request: Request, body: IngestBody) -> dict[str, Any]:
    """Ingest a server-side path or uploaded files; returns the ingestion report."""
    service = _service(request)
    if (body.path is None) == (body.files is None):
        raise InvalidRequestError("Send exactly one of 'path' or 'files'.", param="path")
    if body.path is not None:
        root = _allowed(body.path, get_state(request).settings.rag.allowed_roots)
        report = await service.ingest_paths([root], body.collection, prune=body.prune)
    else:
        with tempfile.TemporaryDirectory(prefix="sovereign-upload-") as tmp:
            sources = []
            for i, upload in enumerate(body.files or []):
                name = Path(upload.filename).name
                if not name or name in {".", ".."}:
                    raise InvalidRequestError(f"Invalid filename {upload.filename!r}.", param=f"files.{i}.filename")
                try:
                    data = base64.b64decode(upload.content_base64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise InvalidRequestError(f"files.{i}.content_base64 is not valid base64.",
                                              param=f"files.{i}.content_base64") from exc
                real = Path(tmp) / f"{i}-{name}"
                real.write_bytes(data)
                sources.append(SourceFile(real, f"upload/{name}"))
            report = await service.ingest_files(sources, body.collection)
    collection = body.collection or service.default_collection
    return {"object": "ingest.report", "collection": collection,
            "index_version": await service.store.index_version(collection), **report.to_dict()}


@router.get("/v1/documents")
async def list_documents(
    request: Request, collection: str | None = None, limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Documents (optionally of one collection), ordered by path."""
    docs = await _service(request).store.list_documents(collection, limit=limit, offset=offset)
    return {"object": "list", "data": [d.to_dict() for d in docs]}


@router.delete("/v1/documents/{doc_id}")
async def delete_document(request: Request, doc_id: str) -> dict[str, Any]:
    """Delete one document and its chunks (404 when unknown)."""
    doc = await _service(request).delete_document(doc_id)
    return {"id": doc.doc_id, "object": "document", "deleted": True, "collection": doc.collection}


@router.post("/v1/search")
async def search(request: Request, body: SearchBody) -> dict[str, Any]:
    """Hybrid search (BM25 + vectors, RRF); 400 on an empty query or bad top_k, 404 on unknown collection."""
    service = _service(request)
    top_k = body.top_k if body.top_k is not None else service.settings.rag.top_k
    hits = await service.retriever.search(body.query, top_k=top_k, collection=body.collection,
                                          path_glob=body.path_glob)
    data = [{**h.source(), "text": h.text, "metadata": h.metadata} for h in hits]
    version = await service.store.index_version(body.collection) if body.collection else None
    return {"object": "list", "data": data, "collection": body.collection, "index_version": version}
