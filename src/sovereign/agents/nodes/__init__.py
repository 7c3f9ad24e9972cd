"""The pipeline's nodes: plain async functions, testable without LangGraph.

Each module has a core function with explicit arguments (``route``, ``plan``, ``retrieve``,
``synthesize``, ``validate``, ``simple_answer``) and a state adapter ``run(state, ctx) -> dict``
that reads :class:`~sovereign.agents.state.AgentState` and returns the fields it updates.
:mod:`sovereign.agents.isolation` wraps the adapters (timeout, span, metrics, failure -> degrade)
and :mod:`sovereign.agents.graph` wires them.
"""
