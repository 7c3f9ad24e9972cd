"""The LangGraph wiring: the only module that imports LangGraph.

```
START -> router --direct--> synthesizer --direct--> END
           |  \\--retrieve--> planner -> retrieval -> synthesizer -> validator --passed--> END
           |                                            ^               |--failed, round 1: feedback
           |                                            \\---------------/--failed, round 2--> END
           \\-- any node failed (router, planner, retrieval, synthesizer) --> simple -> END
```
Routing is :func:`next_step` (pure), applied by each node's adapter through a ``Command``.

A failed validator ends the run with the unvalidated answer (the simple path's remaining step:
no validation). Conversations persist through a checkpointer keyed by ``thread_id =
conversation_id``; only ``turns`` carries over between runs (:func:`~sovereign.agents.state.fresh_state`
resets the rest). Checkpoints are written once per run (``durability="exit"``): a run is one
user turn, and per-step writes cost ~10 ms each on SQLite for no recovery benefit here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from sovereign.agents.isolation import NodeFn, guarded
from sovereign.agents.nodes import planner, retrieval, router, simple, synthesizer, validator
from sovereign.agents.state import AgentState, RunContext, Turn, fresh_state
from sovereign.config import AgentSettings, resolve_secret
from sovereign.errors import ConfigError, StorageError

log = logging.getLogger("sovereign.agents")

DEFAULT_NODES: dict[str, NodeFn] = {
    "router": router.run,
    "planner": planner.run,
    "retrieval": retrieval.run,
    "synthesizer": synthesizer.run,
    "validator": validator.run,
}


def next_step(name: str, state: dict[str, Any]) -> str:
    """Where the run goes after node ``name`` given the state it left (pure; ``END`` = done)."""
    failed = bool(state.get("failed"))
    direct = (state.get("route") or {}).get("route") == "direct"
    if name == "router":
        return "simple" if failed else "synthesizer" if direct else "planner"
    if name == "planner":
        return "simple" if failed else "retrieval"
    if name == "retrieval":
        return "simple" if failed else "synthesizer"
    if name == "synthesizer":
        return "simple" if failed else END if direct else "validator"
    if name == "validator":
        revise = (state.get("verdict") or {}).get("status") == "failed" and state.get("attempts", 1) < 2
        return "synthesizer" if revise and not failed else END
    return END


def _merged(state: AgentState, update: dict[str, Any]) -> dict[str, Any]:
    """``state`` with ``update`` applied as the reducers would (nodes merged, warnings appended)."""
    out: dict[str, Any] = {**state, **update}
    out["nodes"] = {**(state.get("nodes") or {}), **update.get("nodes", {})}
    out["warnings"] = [*(state.get("warnings") or []), *update.get("warnings", [])]
    return out


def _adapt(name: str, fn: NodeFn, *, degrade: bool = True) -> Any:
    """The LangGraph node for ``fn``: guarded, then routed with a ``Command`` (no branch runnables:
    each conditional edge would cost another runnable call per step). The last node of a run
    emits ``{"type": "final", "state": ...}`` and appends the turn to the conversation memory."""
    wrapped = guarded(name, fn, degrade=degrade)

    async def node(state: AgentState, runtime: Runtime[RunContext]) -> Command[str]:
        ctx = runtime.context
        ctx.emit = runtime.stream_writer
        update = await wrapped(state, ctx)
        merged = _merged(state, update)
        goto = next_step(name, merged)
        if goto == END:
            runtime.stream_writer({"type": "final", "state": merged})
            update.update(simple.finish(merged))  # type: ignore[arg-type]
        return Command(update=update, goto=goto)

    node.__name__ = name
    return node


_DESTINATIONS: dict[str, tuple[str, ...]] = {
    "router": ("planner", "synthesizer", "simple"),
    "planner": ("retrieval", "simple"),
    "retrieval": ("synthesizer", "simple"),
    "synthesizer": ("validator", "simple", END),
    "validator": ("synthesizer", END),
    "simple": (END,),
}


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None, nodes: dict[str, NodeFn] | None = None) -> Any:
    """Compile the pipeline. ``nodes`` overrides node adapters by name (tests force failures)."""
    fns = {**DEFAULT_NODES, **(nodes or {})}
    graph = StateGraph(AgentState, context_schema=RunContext)
    for name, fn in fns.items():
        graph.add_node(name, _adapt(name, fn), destinations=_DESTINATIONS[name])
    graph.add_node("simple", _adapt("simple", simple.simple_answer, degrade=False), destinations=(END,))
    graph.add_edge(START, "router")
    return graph.compile(checkpointer=checkpointer)


async def open_checkpointer(settings: AgentSettings, data_dir: Path, stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
    """The configured checkpointer, its connection closed when ``stack`` closes.

    ``sqlite``: ``data_dir/agents.sqlite`` (WAL, synchronous=NORMAL); ``postgres``: the DSN in the
    env var ``agents.pg_dsn_env``; ``memory``: process memory (lost at exit).

    Raises:
        ConfigError: postgres without a DSN.
        StorageError: the database cannot be opened or its tables created.
    """
    if settings.checkpointer == "memory":
        return InMemorySaver()
    try:
        if settings.checkpointer == "postgres":
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            dsn = resolve_secret(settings.pg_dsn_env)
            if not dsn:
                raise ConfigError("agents.checkpointer = postgres needs agents.pg_dsn_env naming a set variable.")
            saver: Any = await stack.enter_async_context(AsyncPostgresSaver.from_conn_string(dsn))
        else:
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            data_dir.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(str(data_dir / "agents.sqlite"))
            stack.push_async_callback(conn.close)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            saver = AsyncSqliteSaver(conn)
        await saver.setup()
    except ConfigError:
        raise
    except Exception as exc:  # sqlite3 / aiosqlite / psycopg errors, translated once here
        raise StorageError(f"Could not open the agents' {settings.checkpointer} checkpointer: {exc}") from exc
    return saver


class AgentGraph:
    """A compiled pipeline with its checkpointer.

    Use ``async with AgentGraph.open(settings, data_dir) as graph`` or call :meth:`start` /
    :meth:`close`. :meth:`run` yields the nodes' events and, last, ``{"type": "final", "state": ...}``.
    """

    def __init__(self, settings: AgentSettings, data_dir: Path, nodes: dict[str, NodeFn] | None = None) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self._nodes = nodes
        self._stack: AsyncExitStack | None = None
        self._graph: Any = None
        self.warning: str | None = None

    @property
    def started(self) -> bool:
        return self._graph is not None

    async def start(self) -> None:
        """Open the checkpointer and compile; idempotent. A database that cannot be opened
        (StorageError) falls back to memory with :attr:`warning` set.

        Raises:
            ConfigError: postgres without a DSN.
        """
        if self._graph is not None:
            return
        stack = AsyncExitStack()
        try:
            saver = await open_checkpointer(self.settings, self.data_dir, stack)
        except StorageError as exc:  # answer anyway; conversations live in memory until a restart
            await stack.aclose()
            log.error("agents checkpointer unavailable, using memory: %s", exc)
            self.warning = f"conversations are not persisted ({exc.message}); using memory"
            saver = InMemorySaver()
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._graph = build_graph(saver, self._nodes)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._graph = None

    async def __aenter__(self) -> AgentGraph:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(
        self, question: str, history: Sequence[Turn], conversation_id: str, ctx: RunContext
    ) -> AsyncIterator[dict[str, Any]]:
        """Run one turn of ``conversation_id``; yields node events, the last being
        ``{"type": "final", "state": ...}`` (emitted by the last node)."""
        if self._graph is None:
            await self.start()
        config = {"configurable": {"thread_id": conversation_id}}
        async for event in self._graph.astream(
            fresh_state(question, history), config, context=ctx, stream_mode="custom", durability="exit"
        ):
            yield event

    async def turns(self, conversation_id: str) -> list[Turn]:
        """The turns stored for ``conversation_id`` (empty when unknown)."""
        if self._graph is None:
            await self.start()
        snapshot = await self._graph.aget_state({"configurable": {"thread_id": conversation_id}})
        return list(snapshot.values.get("turns", [])) if snapshot and snapshot.values else []
