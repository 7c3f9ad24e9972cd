"""``sovereign chat``: talk to the embedded model in the terminal, tokens streamed as they come.

``sovereign chat "prompt"`` answers once and exits; without a prompt it is interactive (``/exit``
or Ctrl-D to leave, ``/reset`` to forget the conversation).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from sovereign.backends.base import ChatBackend
from sovereign.cli.common import ConfigOption, settings_from
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams


async def _answer(backend: ChatBackend, history: list[ChatMessage], sampling: SamplingParams, console: Console) -> str:
    request = GenerationRequest(model=backend.name, sampling=sampling, messages=tuple(history))
    parts: list[str] = []
    async for chunk in backend.stream(request):
        if chunk.text:
            parts.append(chunk.text)
            console.print(chunk.text, end="", markup=False, highlight=False, soft_wrap=True)
    console.print()
    return "".join(parts)


async def _run(backend: ChatBackend, prompt: str | None, system: str | None, sampling: SamplingParams) -> None:
    console = Console()
    with console.status("loading model..."):
        await backend.start()
    history: list[ChatMessage] = [ChatMessage("system", system)] if system else []
    try:
        if prompt is not None:
            history.append(ChatMessage("user", prompt))
            await _answer(backend, history, sampling, console)
            return
        console.print(f"[dim]chatting with {backend.name}; /reset clears, /exit or Ctrl-D leaves[/]")
        while True:
            try:
                line = await asyncio.to_thread(console.input, "[bold green]you>[/] ")
            except EOFError:
                console.print()
                return
            if line.strip() in {"/exit", "/quit"}:
                return
            if line.strip() == "/reset":
                del history[1 if system else 0 :]
                continue
            if not line.strip():
                continue
            history.append(ChatMessage("user", line))
            console.print("[bold cyan]model>[/] ", end="")
            history.append(ChatMessage("assistant", await _answer(backend, history, sampling, console)))
    finally:
        await backend.close()


def chat(
    prompt: Annotated[str | None, typer.Argument(help="One-shot prompt; omit for an interactive chat.")] = None,
    config: ConfigOption = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Output tokens per answer.")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.7,
    seed: Annotated[int | None, typer.Option(help="Sampling seed for reproducible answers.")] = None,
) -> None:
    """Chat with the embedded model in the terminal."""
    from sovereign.backends.registry import default_engine

    settings = settings_from(config)
    backend = default_engine(settings)
    sampling = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    asyncio.run(_run(backend, prompt, system, sampling))


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
