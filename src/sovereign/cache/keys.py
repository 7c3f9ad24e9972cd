"""Exact scope keys and the cacheability policy.

A cached answer may only be served to a request that would have produced the same answer. The
*scope* is everything about a request except the final user question that can change the output:

- the resolved model name and the request kind (chat or text completion);
- every message before the final user question (system / developer prompt and conversation history);
- every output-changing sampling parameter: ``max_tokens``, ``temperature``, ``top_p``, ``seed``,
  ``stop``, ``json_mode``, ``json_schema``, ``logprobs``, ``ignore_eos``, ``presence_penalty``,
  ``frequency_penalty``; and ``tools``, ``tool_choice``, ``parallel_tool_calls`` (earlier tool
  calls and results are part of the context);
- the tenant (API-key identity, ``require_api_key``) so tenants never share answers;
- for RAG models, the collection and its index version, so a re-ingest changes the scope.

A request that names a ``conversation_id`` is never cached: its answer depends on history kept
server-side (the agent checkpointer), which no key derived from the request can capture.

The scope key is a hex SHA-256 of a canonical JSON of those fields; the exact key is a SHA-256 of
the scope key and the normalized query. The semantic layer searches only within one scope.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

import orjson

from sovereign.types import GenerationRequest

CacheMode = Literal["auto", "no-cache", "no-store", "off", "force"]
_SPACE = re.compile(r"\s+")


def normalize_query(text: str) -> str:
    """NFKC, collapsed whitespace, stripped. Case and punctuation are kept (they can change answers)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


@dataclass(frozen=True, slots=True)
class CacheKey:
    """``scope`` and ``exact`` keys (hex) and the normalized ``query`` that the semantic layer embeds."""

    scope: str
    exact: str
    query: str


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(
    request: GenerationRequest,
    *,
    tenant: str,
    chat: bool,
    collection: str | None = None,
    index_version: int | str | None = None,
) -> CacheKey | None:
    """The cache key of ``request``, or None (not cacheable) when it has no final user question to
    key on or continues a server-side conversation (``conversation_id``).

    Args:
        request: the domain request (model already resolved to its public name).
        tenant: caller identity (``anonymous`` when auth is off); answers never cross tenants.
        chat: chat completion (True) or text completion (False).
        collection / index_version: for RAG models; part of the scope.
    """
    if request.conversation_id is not None:
        return None
    if chat:
        if not request.messages or request.messages[-1].role != "user":
            return None
        query = request.messages[-1].content
        context = [[m.role, m.content, [c.to_dict() for c in m.tool_calls], m.tool_call_id]
                   for m in request.messages[:-1]]
    else:
        query = request.prompt or ""
        context = []
    query = normalize_query(query)
    if not query:
        return None
    s = request.sampling
    scope_fields = {
        "v": 2,
        "model": request.model,
        "kind": "chat" if chat else "text",
        "context": context,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "stop": list(s.stop),
        "json_mode": s.json_mode,
        "json_schema": s.json_schema,
        "logprobs": [s.logprobs, s.top_logprobs],
        "tools": list(request.tools),
        "tool_choice": request.tool_choice,
        "parallel_tool_calls": request.parallel_tool_calls,
        "ignore_eos": s.ignore_eos,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "samplers": s.samplers,
        "logit_bias": sorted(s.logit_bias.items()),
        "tenant": tenant,
        "collection": collection,
        "index_version": index_version,
    }
    scope = _sha(orjson.dumps(scope_fields, option=orjson.OPT_SORT_KEYS))
    return CacheKey(scope=scope, exact=_sha(f"{scope}\n{query}".encode()), query=query)


def request_mode(field: str | None, cache_control: str | None) -> CacheMode:
    """Combine the ``cache`` request field and the ``Cache-Control`` request header.

    ``no-cache``: do not serve from the cache, but store the fresh answer. ``no-store``: may serve,
    never store. Both (or ``off``): bypass. ``force``: cache even a non-reproducible request.
    The stricter of field and header wins.
    """
    directives = {d.strip().split("=")[0].lower() for d in (cache_control or "").split(",") if d.strip()}
    no_read = field in ("no-cache", "off") or "no-cache" in directives
    no_write = field in ("no-store", "off") or "no-store" in directives
    if no_read and no_write:
        return "off"
    if no_read:
        return "no-cache"
    if no_write:
        return "no-store"
    return "force" if field == "force" else "auto"


def reproducible(request: GenerationRequest) -> bool:
    """True when the request is cached by default: greedy decoding (temperature 0).

    A ``seed`` with temperature > 0 is not enough: engines reproduce a seeded sample only on the
    same build, batch and hardware, and a client that samples asks for variety; such requests are
    cached only with ``cache: "force"`` (the seed is then part of the scope).
    """
    return request.sampling.temperature == 0.0
