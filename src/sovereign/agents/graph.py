"""The LangGraph wiring: the only module that imports LangGraph.

```
START -> router --direct--> synthesizer --direct--> END
           |  \\--retrieve--> planner -> retrieval -> synthesizer -> validator --passed--> END
           |                                            ^               |--failed, round 1: feedback
           |                                            \\---------------/--failed, round 2--> END
           \\-- any node failed (router, planner, retrieval, synthesizer) --> simple -> END
```
Routing is :func:`next_step` (pure), applied by each node's adapter through a ``Command``.
The planner and the retrieval expert share one LangGraph step (:data:`STEPS`).

A failed validator ends the run with the unvalidated answer (the simple path's remaining step:
no validation). Conversations persist through a checkpointer keyed by ``thread_id``
(:func:`~sovereign.agents.state.thread_id`: the conversation id, namespaced by the caller's tenant
unless anonymous, so one tenant cannot resume another's thread); only ``turns`` carries over
between runs (:func:`~sovereign.agents.state.fresh_state` resets the rest), so the last node
also empties the per-run fields (:data:`RUN_FIELDS_CLEARED`) and the stored checkpoint holds the
conversation, not the last run's sources and verdict.
Checkpoints are written once per run (``durability="exit"``): a run is one user turn, and
per-step writes cost ~10 ms each on SQLite for no recovery benefit here. The SQLite checkpointer
(:class:`ThreadedSqliteSaver`) makes one thread hop per checkpointer call (two per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from sovereign.agents.isolation import NodeFn, guarded
from sovereign.agents.nodes import planner, retrieval, router, simple, synthesizer, validator
from sovereign.agents.state import AgentState, RunContext, Turn, fresh_state, thread_id
from sovereign.config import AgentSettings, resolve_secret
from sovereign.errors import ConfigError, StorageError
from sovereign.extras import require
from sovereign.storage import SqliteWorker

log = logging.getLogger("sovereign.agents")
T = TypeVar("T")
# What the last node writes besides the new turns: every per-run field emptied (the final event
# already carried them), so the checkpoint stores only the conversation.
RUN_FIELDS_CLEARED: dict[str, Any] = dict(fresh_state(""))

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


# LangGraph step -> the pipeline nodes it runs, in order, within one superstep. The planner is
# pure CPU (~20 µs) and is followed by retrieval unless it fails, so it shares retrieval's step:
# each LangGraph superstep costs ~0.3 ms of orchestration (bench/agents_bench.py, overhead).
# Spans, events, timings and failure isolation stay per pipeline node.
STEPS: dict[str, tuple[str, ...]] = {
    "router": ("router",),
    "retrieval": ("planner", "retrieval"),
    "synthesizer": ("synthesizer",),
    "validator": ("validator",),
    "simple": ("simple",),
}
_STEP_OF = {names[0]: step for step, names in STEPS.items()}  # next_step's node -> the step starting with it
_DESTINATIONS: dict[str, tuple[str, ...]] = {
    "router": ("retrieval", "synthesizer", "simple"),
    "retrieval": ("synthesizer", "simple"),
    "synthesizer": ("validator", "simple", END),
    "validator": ("synthesizer", END),
    "simple": (END,),
}


def _adapt(step: str, fns: Sequence[tuple[str, NodeFn]], *, degrade: bool = True) -> Any:
    """The LangGraph node of ``step``: each pipeline node of ``fns`` guarded and run in order while
    :func:`next_step` leads to the next one, then routed with a ``Command`` (no branch runnables:
    each conditional edge would cost another runnable call per step). The last node of a run
    emits ``{"type": "final", "state": ...}`` and appends the turn to the conversation memory."""
    chain = [(name, guarded(name, fn, degrade=degrade)) for name, fn in fns]

    async def node(state: AgentState, runtime: Runtime[RunContext]) -> Command[str]:
        ctx = runtime.context
        merged: dict[str, Any] = dict(state)
        update: dict[str, Any] = {}
        goto: str = END
        for i, (name, wrapped) in enumerate(chain):
            result = await wrapped(merged, ctx)  # type: ignore[arg-type]
            update = _merged(update, result)  # type: ignore[arg-type]
            merged = _merged(merged, result)  # type: ignore[arg-type]
            goto = next_step(name, merged)
            if i + 1 == len(chain) or goto != chain[i + 1][0]:
                break
        if goto == END:
            ctx.emit({"type": "final", "state": merged})
            update = {**RUN_FIELDS_CLEARED, **simple.finish(merged)}  # type: ignore[arg-type]
        return Command(update=update, goto=_STEP_OF.get(goto, goto))

    node.__name__ = step
    return node


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None, nodes: dict[str, NodeFn] | None = None) -> Any:
    """Compile the pipeline. ``nodes`` overrides node adapters by name (tests force failures)."""
    fns: dict[str, NodeFn] = {**DEFAULT_NODES, **(nodes or {}), "simple": simple.simple_answer}
    graph = StateGraph(AgentState, context_schema=RunContext)
    for step, names in STEPS.items():
        graph.add_node(step, _adapt(step, [(n, fns[n]) for n in names], degrade=step != "simple"),
                       destinations=_DESTINATIONS[step])
    graph.add_edge(START, "router")
    return graph.compile(checkpointer=checkpointer)


class ThreadedSqliteSaver(SqliteSaver):
    """LangGraph's SQLite checkpointer with each async call run whole on one dedicated thread.

    ``AsyncSqliteSaver`` (aiosqlite) hops to its thread and back for every execute, fetch, cursor
    close and commit: about nine hops per run, each waiting for a core on a busy machine. Here a
    checkpointer call is one hop (a run makes two: load at start, save at exit), serialisation
    included. The connection lives on a :class:`~sovereign.storage.SqliteWorker` (the PRAGMAs of
    every Sovereign SQLite store) and is only used from its thread. The checkpoint tables are
    LangGraph's (``setup()``), not versioned by Sovereign. Open with :meth:`open`; :meth:`aclose`
    closes the connection and the thread.
    """

    def __init__(self, worker: SqliteWorker) -> None:
        super().__init__(worker.conn)
        self._worker = worker

    @classmethod
    async def open(cls, path: Path) -> ThreadedSqliteSaver:
        """Connect to ``path`` (see :data:`sovereign.storage.PRAGMAS`) and create LangGraph's tables.

        Raises:
            StorageError: the file cannot be opened or written.
        """
        # DEFERRED: sqlite3's default, which SqliteSaver's commit() calls expect
        worker = SqliteWorker(path, label=f"the agents' checkpoint database {path}",
                              thread_name="agents-checkpoints", isolation_level="DEFERRED")
        await worker.aopen()
        saver = cls(worker)
        try:
            await saver._call(saver.setup)
        except BaseException:
            await saver.aclose()
            raise
        return saver

    async def aclose(self) -> None:
        """Close the connection on its thread and stop the thread."""
        await self._worker.aclose()

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the checkpointer's thread; sqlite3 errors become StorageError."""
        call = functools.partial(fn, *args, **kwargs)
        return await self._worker.run(lambda _conn: call())

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._call(self.get_tuple, config)

    async def alist(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = await self._call(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Any, metadata: Any, new_versions: Any) -> RunnableConfig:
        return await self._call(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self._call(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._call(self.delete_thread, thread_id)

    async def aget_delta_channel_history(self, *, config: RunnableConfig, channels: Sequence[str]) -> Mapping[str, Any]:
        return await self._call(self.get_delta_channel_history, config=config, channels=channels)


async def open_checkpointer(settings: AgentSettings, data_dir: Path, stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
    """The configured checkpointer, its connection closed when ``stack`` closes.

    ``sqlite``: ``data_dir/agents.sqlite`` (:class:`ThreadedSqliteSaver`); ``postgres``: the DSN in
    the env var ``agents.pg_dsn_env``; ``memory``: process memory (lost at exit).

    Raises:
        ConfigError: postgres without a DSN.
        StorageError: the database cannot be opened or its tables created.
    """
    if settings.checkpointer == "memory":
        return InMemorySaver()
    try:
        if settings.checkpointer == "postgres":
            require("langgraph.checkpoint.postgres", extra="pgvector", feature="the PostgreSQL agent checkpointer")
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            dsn = resolve_secret(settings.pg_dsn_env)
            if not dsn:
                raise ConfigError("agents.checkpointer = postgres needs agents.pg_dsn_env naming a set variable.")
            saver: Any = await stack.enter_async_context(AsyncPostgresSaver.from_conn_string(dsn))
            await saver.setup()
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            saver = await ThreadedSqliteSaver.open(data_dir / "agents.sqlite")
            stack.push_async_callback(saver.aclose)
    except (ConfigError, StorageError):
        raise
    except Exception as exc:  # psycopg errors, translated once here
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
        """Run one turn of ``ctx.tenant``'s conversation ``conversation_id``; yields node events, the
        last being ``{"type": "final", "state": ...}`` (emitted by the last node).

        The graph runs in its own task and ``ctx.emit`` puts events on an in-process queue (not
        LangGraph's custom stream, which costs a ``call_soon_threadsafe`` wake-up per event);
        closing this generator early (client gone) cancels that task.

        Raises:
            whatever the graph raises (a node on the simple path, the checkpointer).
        """
        if self._graph is None:
            await self.start()
        config = {"configurable": {"thread_id": thread_id(conversation_id, ctx.tenant)}}
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        ctx.emit = events.put_nowait

        async def drive() -> None:
            try:
                async for _ in self._graph.astream(
                    fresh_state(question, history), config, context=ctx, stream_mode="custom", durability="exit"
                ):
                    pass
            finally:
                events.put_nowait(None)

        task = asyncio.create_task(drive())
        try:
            while (event := await events.get()) is not None:
                yield event
            await task  # the graph's own exception, if it raised
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def turns(self, conversation_id: str, tenant: str | None = None) -> list[Turn]:
        """The turns stored for ``tenant``'s ``conversation_id`` (empty when unknown, including
        another tenant's)."""
        if self._graph is None:
            await self.start()
        config = {"configurable": {"thread_id": thread_id(conversation_id, tenant)}}
        snapshot = await self._graph.aget_state(config)
        return list(snapshot.values.get("turns", [])) if snapshot and snapshot.values else []
