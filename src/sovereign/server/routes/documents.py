"""Document memory over HTTP: ingest, list, delete documents; hybrid search.

``POST /v1/documents`` takes JSON: either ``path`` (a server-side file or directory that must lie
under one of ``rag.allowed_roots``; anything else is 403) or ``files`` (uploads as
``{"filename", "content_base64"}``; stored under the logical path ``upload/<filename>``), plus
optional ``collection`` and ``prune``; or ``multipart/form-data`` with one ``files`` part per
uploaded file and an optional ``collection`` field. It answers the ingestion report.
``GET /v1/documents`` lists documents (404 for an unknown ``collection``), ``GET
/v1/documents/{id}`` reads one, ``DELETE /v1/documents/{id}`` removes one (404 when unknown),
``POST /v1/search`` returns ranked chunks with RRF scores and the collection's ``index_version``.

Every route acts as the caller's tenant (``require_api_key``): it ingests into, lists, reads,
deletes and searches that tenant's collections only. Another tenant's collection or document is
answered exactly like one that does not exist (404, never 403), so its existence is not revealed.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile

from sovereign.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from sovereign.rag.ingest import IngestReport, SourceFile
from sovereign.rag.service import RagService
from sovereign.rag.stores.base import check_collection
from sovereign.server.schemas import UnicodeChecked
from sovereign.server.state import get_state, require_admin, require_api_key

# every route needs a key; the routes also take the tenant (FastAPI resolves the dependency once)
router = APIRouter(dependencies=[Depends(require_api_key)])


class UploadedFile(UnicodeChecked):
    filename: str = Field(min_length=1, max_length=255)
    content_base64: str


class IngestBody(UnicodeChecked):
    path: str | None = None
    files: list[UploadedFile] | None = None
    collection: str | None = None
    prune: bool = False


class SearchBody(UnicodeChecked):
    query: str
    top_k: int | None = None
    collection: str | None = None
    path_glob: str | None = None


def _service(request: Request) -> RagService:
    return get_state(request).require_rag()


def _allowed(path: str, roots: list[Path]) -> Path:
    """The resolved ``path`` if it lies under an allowed root.

    Raises:
        InvalidRequestError: a NUL byte, or ``~user`` naming no user.
        PermissionDeniedError: outside every allowed root.
    """
    if "\x00" in path:
        raise InvalidRequestError("path contains a NUL byte.", param="path")
    try:
        resolved = Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # "~nosuchuser/x": no such home directory
        raise InvalidRequestError(f"Cannot resolve path {path!r}: {exc}.", param="path") from exc
    for root in roots:
        if resolved.is_relative_to(Path(root).expanduser().resolve()):
            return resolved
    raise PermissionDeniedError(
        f"{path} is outside the allowed roots; add its directory to rag.allowed_roots to ingest it.",
        param="path",
    )


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` references inlined (for ``openapi_extra``)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.rsplit("/", 1)[1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return dict(walk(schema))


_INGEST_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inline_refs(IngestBody.model_json_schema())},
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "collection": {"type": "string"}}}},
}}}
MAX_UPLOAD_FILES = 1000


def _safe_name(filename: str | None, param: str) -> str:
    """The base name of an uploaded file.

    Raises:
        InvalidRequestError: an empty, ``.`` or ``..`` name, a NUL byte, text that is not valid
            Unicode, or a name over 200 UTF-8 bytes (it is stored as ``N-name`` under a 255-byte limit).
    """
    name = Path(filename or "").name
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        size = -1
    if not name or name in {".", ".."} or "\x00" in name or not 0 < size <= 200:
        raise InvalidRequestError(f"Invalid filename {filename!r}: 1 to 200 bytes of UTF-8, no NUL.", param=param)
    return name


async def _json_body(request: Request) -> IngestBody:
    """The JSON form of the request. Raises InvalidRequestError (not JSON) / RequestValidationError."""
    try:
        raw = await request.json()
    except ValueError as exc:
        raise InvalidRequestError("The request body is not valid JSON (or send multipart/form-data files).") from exc
    try:
        return IngestBody.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


async def _multipart_sources(request: Request, tmp: Path) -> tuple[list[SourceFile], str | None]:
    """Uploaded ``files`` (one form part each) written under ``tmp``, and the ``collection`` field.

    Raises:
        InvalidRequestError: no file, a field other than ``files`` / ``collection``, a bad filename.
    """
    sources: list[SourceFile] = []
    collection: str | None = None
    async with request.form(max_files=MAX_UPLOAD_FILES) as form:
        for key, value in form.multi_items():
            if key == "collection" and isinstance(value, str):
                collection = value or None
            elif key == "files" and isinstance(value, StarletteUploadFile):
                i = len(sources)
                name = _safe_name(value.filename, f"files.{i}")
                real = tmp / f"{i}-{name}"
                with real.open("wb") as out:
                    while block := await value.read(1 << 20):
                        out.write(block)
                sources.append(SourceFile(real, f"upload/{name}"))
            else:
                raise InvalidRequestError(
                    f"Unexpected form field {key!r}: send files as 'files' parts and optionally 'collection'.",
                    param=key)
    if not sources:
        raise InvalidRequestError("Send at least one file as a 'files' part.", param="files")
    return sources, collection


@router.post("/v1/documents", openapi_extra=_INGEST_OPENAPI)
async def ingest_documents(request: Request, tenant: str = Depends(require_api_key)) -> dict[str, Any]:
    """Ingest a server-side path or uploaded files (JSON base64 or multipart) into the caller's
    collection; returns the ingestion report."""
    service = _service(request)
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        with tempfile.TemporaryDirectory(prefix="sovereign-upload-") as tmp:
            sources, collection = await _multipart_sources(request, Path(tmp))
            report = await service.ingest_files(sources, collection, tenant=tenant)
        return await _report(service, collection, tenant, report)
    body = await _json_body(request)
    if (body.path is None) == (body.files is None):
        raise InvalidRequestError("Send exactly one of 'path' or 'files'.", param="path")
    if body.path is not None:
        root = _allowed(body.path, get_state(request).settings.rag.allowed_roots)
        report = await service.ingest_paths([root], body.collection, prune=body.prune, tenant=tenant)
    else:
        with tempfile.TemporaryDirectory(prefix="sovereign-upload-") as tmp:
            json_sources = []
            for i, upload in enumerate(body.files or []):
                name = _safe_name(upload.filename, f"files.{i}.filename")
                try:
                    data = base64.b64decode(upload.content_base64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise InvalidRequestError(f"files.{i}.content_base64 is not valid base64.",
                                              param=f"files.{i}.content_base64") from exc
                real = Path(tmp) / f"{i}-{name}"
                real.write_bytes(data)
                json_sources.append(SourceFile(real, f"upload/{name}"))
            report = await service.ingest_files(json_sources, body.collection, tenant=tenant)
    return await _report(service, body.collection, tenant, report)


async def _report(service: RagService, collection: str | None, tenant: str, report: IngestReport) -> dict[str, Any]:
    name = collection or service.default_collection
    return {"object": "ingest.report", "collection": name,
            "index_version": await service.store.index_version(name, tenant=tenant), **report.to_dict()}


@router.get("/v1/documents")
async def list_documents(
    request: Request, collection: str | None = None, limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**63 - 1), tenant: str = Depends(require_api_key),
) -> dict[str, Any]:
    """The caller's documents (optionally of one collection), ordered by path; 404 for a collection
    the caller does not have."""
    store = _service(request).store
    if collection is not None:
        check_collection(collection)
        if collection not in await store.collections(tenant=tenant):
            raise NotFoundError(f"Unknown collection {collection!r}; ingest documents into it first.",
                                param="collection")
    docs = await store.list_documents(collection, limit=limit, offset=offset, tenant=tenant)
    return {"object": "list", "data": [d.to_dict() for d in docs]}


@router.get("/v1/documents/{doc_id}")
async def get_document(request: Request, doc_id: str, tenant: str = Depends(require_api_key)) -> dict[str, Any]:
    """One of the caller's documents (``object: document``); 404 when unknown or another tenant's."""
    doc = await _service(request).store.get_document(doc_id, tenant=tenant)
    return {"object": "document", **doc.to_dict()}


@router.delete("/v1/documents/{doc_id}", dependencies=[Depends(require_admin)])
async def delete_document(request: Request, doc_id: str, tenant: str = Depends(require_api_key)) -> dict[str, Any]:
    """Delete one of the caller's tenant's documents and its chunks: a key of scope admin (403 for a
    user key; 404 when unknown or another tenant's)."""
    doc = await _service(request).delete_document(doc_id, tenant=tenant)
    return {"id": doc.doc_id, "object": "document", "deleted": True, "collection": doc.collection}


@router.post("/v1/search")
async def search(request: Request, body: SearchBody, tenant: str = Depends(require_api_key)) -> dict[str, Any]:
    """Hybrid search over the caller's documents (BM25 + vectors, RRF); 400 on an empty query or bad
    top_k, 404 on a collection the caller does not have."""
    service = _service(request)
    top_k = body.top_k if body.top_k is not None else service.settings.rag.top_k
    hits = await service.retriever_for(tenant).search(body.query, top_k=top_k, collection=body.collection,
                                                      path_glob=body.path_glob)
    data = [{**h.source(), "text": h.text, "metadata": h.metadata} for h in hits]
    version = await service.store.index_version(body.collection, tenant=tenant) if body.collection else None
    return {"object": "list", "data": data, "collection": body.collection, "index_version": version}
