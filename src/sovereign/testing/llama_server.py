"""llama-cpp-python's own OpenAI-compatible server: the real second engine of tests and benchmarks."""

from __future__ import annotations

import sys

from sovereign.backends.llamacpp import default_model_path


def llama_server_args(port: int, alias: str, *, n_ctx: int = 1024, threads: int = 1) -> list[str]:
    """Command line serving the bundled SmolLM2 on ``127.0.0.1:port`` as model ``alias``.

    ``--interrupt_requests False``: by default a new request cancels the running stream, which
    turns concurrency into 503s; real deployments queue instead.
    """
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()), "--host", "127.0.0.1",
        "--port", str(port), "--model_alias", alias, "--n_ctx", str(n_ctx), "--n_threads", str(threads),
        "--interrupt_requests", "False",
    ]
