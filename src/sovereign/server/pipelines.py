"""Pipeline chat models served beside the engines, registered through ``register_pipelines``.

The built-ins are ``sovereign-rag`` (cited answers from document memory) and ``sovereign-agent``
(the LangGraph pipeline, extra ``agents``); a plugin adds its own pipeline with the same hook.
A factory receives ``(settings, registry, rag)`` after document memory started and returns the
backend, or None when it cannot serve (it logs why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sovereign import plugins
from sovereign.backends.base import ChatBackend
from sovereign.backends.registry import ModelRegistry
from sovereign.config import Settings
from sovereign.extras import installed
from sovereign.hookspecs import hookimpl
from sovereign.plugins import Kinds

if TYPE_CHECKING:
    from sovereign.rag.service import RagService

log = logging.getLogger("sovereign.server")

PipelineFactory = Callable[[Settings, ModelRegistry, "RagService | None"], "ChatBackend | None"]
PIPELINES: Kinds[PipelineFactory] = plugins.PIPELINES


def rag_model(settings: Settings, registry: ModelRegistry, rag: RagService | None) -> ChatBackend | None:
    """``sovereign-rag`` (see :func:`sovereign.rag.answer.rag_pipeline`)."""
    from sovereign.rag.answer import rag_pipeline

    return rag_pipeline(settings, registry, rag)


def agent_model(settings: Settings, registry: ModelRegistry, rag: RagService | None) -> ChatBackend | None:
    """``sovereign-agent`` (see :func:`sovereign.agents.assembly.agent_pipeline`); None without the
    ``agents`` extra (logged with the pip command)."""
    if not installed("langgraph"):
        log.warning("sovereign-agent not served: the 'agents' extra is not installed "
                    "(pip install 'sovereign[agents]')")
        return None
    from sovereign.agents.assembly import agent_pipeline

    return agent_pipeline(settings, registry, rag)


@hookimpl
def register_pipelines(register: Callable[[str, PipelineFactory], None]) -> None:
    """``sovereign-rag`` and ``sovereign-agent``."""
    register("sovereign-rag", rag_model)
    register("sovereign-agent", agent_model)
