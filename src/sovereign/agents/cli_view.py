"""A terminal view of the pipeline: each node's status and timing as it runs, the answer streaming
below, then sources and the validator's verdict (Rich).

``sovereign agent ask "..."`` uses :func:`run_agent_view`; ``sovereign ask --agent`` can call it too.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sovereign.agents.backend import response_metadata
from sovereign.agents.state import NODE_NAMES, check_conversation_id, check_question
from sovereign.config import Settings
from sovereign.rag.models import ANONYMOUS
from sovereign.types import ChatMessage, GenerationChunk, GenerationRequest, SamplingParams

_ICONS = {"waiting": "[dim]·[/]", "running": "[yellow]…[/]", "done": "[green]✓[/]", "failed": "[red]✗[/]"}


class NodeBoard:
    """The live node table and answer text, updated from pipeline events."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {n: {"status": "waiting", "ms": None, "note": ""} for n in NODE_NAMES}
        self.answer = Text()

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        node = event.get("node", "")
        if kind == "node_start":
            self.rows.setdefault(node, {"ms": None, "note": ""})["status"] = "running"
        elif kind == "node_end":
            row = self.rows.setdefault(node, {})
            row.update(status="failed" if event.get("error") else "done", ms=event.get("ms"),
                       note=event.get("error") or event.get("summary", ""))

    def render(self) -> Group:
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
        for column in ("", "node", "ms", "detail"):
            table.add_column(column)
        for name, row in self.rows.items():
            ms = f"{row['ms']:.1f}" if row.get("ms") is not None else ""
            table.add_row(_ICONS.get(row.get("status", "waiting"), ""), name, ms, Text(str(row.get("note", ""))[:80]))
        return Group(table, Text(""), self.answer)


async def run_agent_view(
    question: str,
    settings: Settings,
    *,
    conversation_id: str | None = None,
    collection: str | None = None,
    max_tokens: int = 256,
    console: Console | None = None,
    tenant: str = ANONYMOUS,
) -> dict[str, Any]:
    """Answer ``question`` with the pipeline in this process, drawing the nodes as they run.

    ``collection`` defaults to ``rag.default_collection``; ``tenant`` is whose documents are read and
    whose conversation thread is continued (default: the anonymous tenant, as a gateway without API
    keys). Opens document memory (``RagService``);
    without it the answer degrades to the simple path with a warning. Returns the answer's
    ``sovereign`` metadata.

    Raises:
        InvalidRequestError: empty question or malformed conversation id.
        EngineError / StorageError: the model or the checkpointer cannot start.
    """
    from sovereign.agents.assembly import agent_pipeline
    from sovereign.backends.registry import ModelRegistry, default_engine

    console = console or Console()
    question = check_question(question)
    conversation_id = check_conversation_id(conversation_id)
    model = default_engine(settings)
    registry = ModelRegistry()
    aliases = [settings.agents.model] if settings.agents.model not in (None, model.name) else []
    registry.add_chat(model, aliases=aliases)  # in this process the agent always uses the [engine] model
    service = None
    try:
        from sovereign.rag.service import RagService

        service = await RagService.open(settings)
    except Exception as exc:  # document memory missing or broken: the pipeline degrades, say why
        console.print(f"[yellow]document memory unavailable ({exc}); answers will have no sources[/]")
    backend = agent_pipeline(settings, registry, service, collection=collection)
    assert backend is not None  # the registry serves the [engine] model it asks for
    board = NodeBoard()
    metadata: dict[str, Any] = {}
    try:
        with console.status("loading model..."):
            await backend.start()
        request = GenerationRequest(model=backend.name, sampling=SamplingParams(max_tokens=max_tokens, temperature=0.2),
                                    messages=(ChatMessage("user", question),), conversation_id=conversation_id,
                                    tenant=tenant)
        with Live(board.render(), console=console, refresh_per_second=12) as live:
            async for item in backend.events(question, [], conversation_id or _new_id(), request):
                if isinstance(item, GenerationChunk):
                    board.answer.append(item.text)
                    if item.metadata is not None:
                        metadata = item.metadata
                elif item.get("type") == "final":
                    metadata = response_metadata(item["state"], conversation_id or "")
                else:
                    board.update(item)
                live.update(board.render())
    finally:
        await backend.close()
        await model.close()
        if service is not None:
            await service.close()
    _print_footer(console, metadata)
    return metadata


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _print_footer(console: Console, metadata: dict[str, Any]) -> None:
    console.print()
    for source in metadata.get("sources", []):
        console.print(f"[cyan][{source['n']}][/] {source.get('title', '')} [dim]{source.get('path', '')}[/]")
    verdict = metadata.get("validator", {})
    grounded = "[green]grounded[/]" if metadata.get("grounded") else "[red]not grounded[/]"
    console.print(f"validator: {verdict.get('status')} · {grounded} · conversation {metadata.get('conversation_id')}")
    for warning in metadata.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
