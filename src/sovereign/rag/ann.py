"""The one module importing usearch (HNSW approximate nearest-neighbour index).

Used by the embedded vector store and the semantic cache. onnxruntime is imported first on
purpose: importing usearch (its numkong extension) before onnxruntime makes the later onnxruntime
import crash the process (segfault observed with usearch 2.26 / onnxruntime 1.31 here), and every
process that builds an index also runs the embedder.
"""

from __future__ import annotations

from typing import Any

from sovereign.rag.onnx_runtime import onnxruntime  # noqa: F401  (import order, see above)

# isort: split
from usearch.index import Index  # after onnxruntime, always (module docstring)


def new_index(dimensions: int, metric: str, dtype: str = "f32", **options: Any) -> Index:
    """An empty index of ``dimensions``-long vectors stored as ``dtype`` (``"f32"``, or ``"i8"``:
    usearch stores each component of a unit vector as the integer part of ``x * 127``); ``metric`` is
    ``"cos"`` or ``"ip"``; ``options`` are usearch's HNSW knobs (``connectivity`` = M,
    ``expansion_add``, ``expansion_search``)."""
    return Index(ndim=dimensions, metric=metric, dtype=dtype, **options)
