"""The multi-agent answer pipeline (``sovereign-agent``): router, planner, retrieval expert,
synthesizer and validator on LangGraph, with failure isolation and per-conversation memory.

Modules: :mod:`~sovereign.agents.state` (state and context types), :mod:`~sovereign.agents.nodes`
(plain async nodes), :mod:`~sovereign.agents.isolation` (timeouts, spans, metrics, degrade),
:mod:`~sovereign.agents.graph` (the only LangGraph import; checkpointers),
:mod:`~sovereign.agents.backend` (the ChatBackend), :mod:`~sovereign.agents.cli_view` (terminal view).
See docs/agents.md.
"""
