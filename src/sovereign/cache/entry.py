"""What one cache entry holds, and its JSON encoding (shared by the SQLite and Redis backends).

An entry is one complete generation (its text pieces as streamed, finish reason, usage and the
pipeline's ``sovereign`` metadata) stored under an exact key inside a scope, with the query
embedding used by the semantic layer and the document ids it was built from (provenance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from sovereign.types import GenerationChunk, GenerationResult, Usage


@dataclass(slots=True)
class CacheEntry:
    """One cached response.

    Attributes:
        key: exact key (hex sha256 of scope + normalized query), unique.
        scope: scope key (hex); semantic search never crosses scopes.
        query: the normalized query text (kept for ``cache stats`` and background verification only;
            never logged).
        pieces: output text as streamed, one string per engine chunk (SSE replay keeps the chunking).
        finish_reason: ``stop`` or ``length`` (errors and cancellations are never cached).
        usage: prompt and completion tokens of the original generation.
        metadata: the final chunk's metadata (e.g. ``sources``), without cache status.
        doc_ids: provenance, the document ids the answer was built from.
        vector: float32 ``[dimensions]`` unit query embedding, or None (exact layer only).
        created: Unix seconds; ``expires``: Unix seconds after which the entry is dead.
    """

    key: str
    scope: str
    query: str
    pieces: list[str]
    finish_reason: str
    usage: Usage
    metadata: dict[str, Any] = field(default_factory=dict)
    doc_ids: list[str] = field(default_factory=list)
    vector: np.ndarray | None = None
    created: float = field(default_factory=time.time)
    expires: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def alive(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) < self.expires

    def to_result(self) -> GenerationResult:
        return GenerationResult(
            text=self.text,
            finish_reason=self.finish_reason,  # type: ignore[arg-type]
            usage=Usage(self.usage.prompt_tokens, self.usage.completion_tokens),
            metadata=dict(self.metadata),
        )

    def replay_chunks(self) -> list[GenerationChunk]:
        """The stream as engine chunks: one per stored piece, running usage, the last carries finish."""
        pieces = self.pieces or [""]
        out: list[GenerationChunk] = []
        total = self.usage.completion_tokens
        for i, piece in enumerate(pieces):
            done = i == len(pieces) - 1
            tokens = total if done else min(i + 1, total)
            out.append(
                GenerationChunk(
                    text=piece,
                    usage=Usage(self.usage.prompt_tokens, tokens),
                    finish_reason=self.finish_reason if done else None,  # type: ignore[arg-type]
                    metadata=dict(self.metadata) if done else None,
                )
            )
        return out

    def payload(self) -> bytes:
        """Everything except the vector and keys, as JSON bytes."""
        return orjson.dumps(
            {
                "query": self.query,
                "pieces": self.pieces,
                "finish_reason": self.finish_reason,
                "usage": [self.usage.prompt_tokens, self.usage.completion_tokens],
                "metadata": self.metadata,
                "doc_ids": self.doc_ids,
                "created": self.created,
                "expires": self.expires,
            }
        )

    @classmethod
    def from_payload(cls, key: str, scope: str, payload: bytes, vector: bytes | None) -> CacheEntry:
        """Inverse of :meth:`payload`; ``vector`` is little-endian float32 bytes or None."""
        data = orjson.loads(payload)
        return cls(
            key=key,
            scope=scope,
            query=data["query"],
            pieces=data["pieces"],
            finish_reason=data["finish_reason"],
            usage=Usage(*data["usage"]),
            metadata=data["metadata"],
            doc_ids=data["doc_ids"],
            vector=np.frombuffer(vector, dtype="<f4").copy() if vector else None,
            created=data["created"],
            expires=data["expires"],
        )


def vector_bytes(vector: np.ndarray | None) -> bytes | None:
    """Little-endian float32 bytes of a vector (the on-disk and on-wire form)."""
    return None if vector is None else np.ascontiguousarray(vector, dtype="<f4").tobytes()


def doc_ids_from_metadata(metadata: dict[str, Any] | None) -> list[str]:
    """Document ids a RAG / agent answer used: ``metadata["sources"][i]["doc_id"]`` (rag SearchHit.source)."""
    ids: list[str] = []
    for source in (metadata or {}).get("sources") or []:
        if isinstance(source, dict) and source.get("doc_id"):
            ids.append(str(source["doc_id"]))
    return sorted(set(ids))
