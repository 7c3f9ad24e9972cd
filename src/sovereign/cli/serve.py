"""``sovereign serve``: run the OpenAI-compatible gateway with uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sovereign.cli.common import ConfigOption, settings_from


def multiprocess_metrics_dir(data_dir: Path) -> Path:
    """The directory prometheus-client's multiprocess mode shares between workers, emptied.

    ``PROMETHEUS_MULTIPROC_DIR`` when the operator set it, else ``data_dir/prometheus-multiproc``.
    It must be empty when the workers start: files left by an earlier run would be summed into
    the new run's counters (prometheus-client docs, "Multiprocess Mode").
    """
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or data_dir / "prometheus-multiproc")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000).")] = None,
    model: Annotated[Path | None, typer.Option(help="GGUF file to serve instead of the bundled SmolLM2.")] = None,
    model_name: Annotated[str | None, typer.Option(help="Public name of the served model.")] = None,
    ctx: Annotated[int | None, typer.Option(help="Context window in tokens.")] = None,
    threads: Annotated[int | None, typer.Option(help="llama.cpp CPU threads.")] = None,
    parallel: Annotated[int | None, typer.Option(min=1, help="Engine slots decoded together.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each runs its own engine).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models; starts, watches and
    stops the embedded llama-server."""
    import uvicorn

    from sovereign.server.app import create_app

    if model is not None and not model.is_file():
        raise typer.BadParameter(f"{model} is not a file", param_hint="--model")
    settings = settings_from(
        config,
        server={"host": host, "port": port},
        engine={"model_path": model, "model_name": model_name, "n_ctx": ctx, "n_threads": threads,
                "n_parallel": parallel},
    )
    if workers == 1:
        uvicorn.run(
            create_app(settings), host=settings.server.host, port=settings.server.port, log_level=log_level,
            timeout_graceful_shutdown=5,
        )
        return
    # Several workers: each process rebuilds the app from the environment, so hand the CLI flags
    # down as SOVEREIGN_* variables (the CLI is the edge; config.py reads them back).
    for name, value in {"ENGINE__MODEL_PATH": model, "ENGINE__MODEL_NAME": model_name,
                        "ENGINE__N_CTX": ctx, "ENGINE__N_THREADS": threads, "ENGINE__N_PARALLEL": parallel}.items():
        if value is not None:
            os.environ[f"SOVEREIGN_{name}"] = str(value)
    if config is not None:
        os.environ["SOVEREIGN_CONFIG"] = str(config)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiprocess_metrics_dir(settings.data_dir))
    uvicorn.run(
        "sovereign.server.asgi:create", factory=True, workers=workers, host=settings.server.host,
        port=settings.server.port, log_level=log_level, timeout_graceful_shutdown=5,
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
