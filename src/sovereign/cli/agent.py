"""``sovereign agent ask "question"``: the multi-agent pipeline in the terminal, nodes drawn as they run,
over one tenant's documents and conversation threads (``--tenant``, default ``anonymous``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.cli.ingest import TenantOption
from sovereign.rag.models import ANONYMOUS

agent_app = typer.Typer(help="The multi-agent answer pipeline (router, planner, retrieval, synthesizer, validator).",
                        no_args_is_help=True)


@agent_app.command("ask")
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    config: ConfigOption = None,
    conversation: Annotated[str | None, typer.Option("--conversation", help="Conversation id for follow-ups.")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection (default: rag.default_collection).")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Answer length in tokens.")] = 256,
    tenant: TenantOption = ANONYMOUS,
) -> None:
    """Answer from the document memory with citations and a validator verdict."""
    from sovereign.agents.cli_view import run_agent_view

    settings = settings_from(config)
    asyncio.run(run_agent_view(question, settings, conversation_id=conversation,
                               collection=collection, max_tokens=max_tokens, tenant=tenant))


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")
