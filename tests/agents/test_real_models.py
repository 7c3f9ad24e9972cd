"""The pipeline on the real parts: SmolLM2-135M (llama.cpp) writes, MiniLM (ONNX int8) validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sovereign.agents.backend import AgentBackend
from sovereign.agents.nodes import validator
from sovereign.agents.state import AgentDeps
from sovereign.backends.context_fit import estimate_tokens
from sovereign.config import AgentSettings, EmbeddingSettings
from sovereign.rag.embeddings import OnnxMiniLMEmbedder
from sovereign.testing.agent_fakes import FakeRetriever
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DOCS = {
    "library/json.html": "json.loads(s) deserializes s (a str, bytes or bytearray instance containing a JSON "
                         "document) to a Python object using this conversion table.",
    "library/os.path.html": "os.path.join(path, *paths) joins one or more path segments intelligently.",
    "library/shutil.html": "shutil.copy(src, dst) copies the file src to the file or directory dst.",
}


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLMEmbedder:
    return OnnxMiniLMEmbedder(EmbeddingSettings())


async def test_threshold_separates_supported_from_unsupported(minilm: OnnxMiniLMEmbedder) -> None:
    sources = [{"n": 1, "text": DOCS["library/json.html"]}]
    ok, _ = await validator.validate("json.loads deserializes a JSON document into a Python object [1].",
                                     sources, minilm, 0.45)
    bad, _ = await validator.validate("The Eiffel Tower was finished in Paris in 1889 [1].", sources, minilm, 0.45)
    assert ok["status"] == "passed" and ok["sentences"][0]["score"] > 0.6
    assert bad["status"] == "failed" and bad["sentences"][0]["score"] < 0.2


async def test_real_model_streams_cited_answer_with_verdict(llama: Any, minilm: OnnxMiniLMEmbedder,
                                                            tmp_path: Path) -> None:
    store = FakeRetriever(DOCS)
    deps = AgentDeps(model=llama, retriever=lambda: store, embedder=minilm,
                     settings=AgentSettings(max_tokens=24, node_timeout_s=300), count_tokens=estimate_tokens)
    backend = AgentBackend(deps, tmp_path)
    await backend.start()
    try:
        request = GenerationRequest(
            model="sovereign-agent", sampling=SamplingParams(max_tokens=24, temperature=0.0, seed=1),
            messages=(ChatMessage("user", "What does json.loads do in Python?"),), conversation_id="real-1")
        chunks = [c async for c in backend.stream(request)]
    finally:
        await backend.close()
    text = "".join(c.text for c in chunks)
    meta = chunks[-1].metadata
    assert text.strip() and sum(1 for c in chunks if c.text) > 3  # tokens streamed
    assert meta is not None and meta["sources"][0]["path"] == "library/json.html"
    assert meta["validator"]["status"] in {"passed", "failed"} and meta["validator"]["threshold"] == 0.45
    assert meta["validator"]["rounds"] in {1, 2} and isinstance(meta["grounded"], bool)
    assert meta["nodes"]["synthesizer"]["prompt_tokens"] > 50 and not meta["degraded"]
    assert chunks[-1].usage.completion_tokens >= 1
