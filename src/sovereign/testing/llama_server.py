"""A plain ``llama-server`` (not managed by Sovereign): the real remote engine of tests and benchmarks."""

from __future__ import annotations

from sovereign.backends.llama_process import find_binary
from sovereign.backends.managed import default_model_path


def llama_server_args(port: int, alias: str, *, n_ctx: int = 1024, threads: int = 1, parallel: int = 1) -> list[str]:
    """Command line serving the bundled SmolLM2 on ``127.0.0.1:port`` as model ``alias`` with
    ``parallel`` slots of ``n_ctx`` tokens each (engine kind ``llamacpp-server`` in a deployment)."""
    return [
        str(find_binary()), "--model", str(default_model_path()), "--host", "127.0.0.1", "--port", str(port),
        "--alias", alias, "--ctx-size", str(n_ctx * parallel), "--parallel", str(parallel),
        "--threads", str(threads), "--threads-http", "32", "--jinja", "--no-webui",
    ]
