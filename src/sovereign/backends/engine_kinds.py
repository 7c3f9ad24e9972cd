"""The built-in engine kinds, registered through the same hook as a plugin's (``register_engines``).

- ``embedded``: a llama-server Sovereign starts and supervises for the deployment's ``model_path``
  (``[engine]`` settings otherwise; the deployment's ``context_window`` as ``n_ctx``);
- ``vllm``, ``sglang``, ``llamacpp-server``, ``llama-cpp-python``, ``ollama``, ``tgi``, ``triton``,
  ``openai``: a remote OpenAI-compatible server at ``base_url`` (quirks per kind in
  :data:`sovereign.backends.openai_compat.PROFILES`).
"""

from __future__ import annotations

from collections.abc import Callable

from sovereign.backends.base import ChatBackend
from sovereign.backends.registry import EngineContext, EngineFactory
from sovereign.config import DeploymentSettings
from sovereign.errors import ConfigError
from sovereign.hookspecs import hookimpl


def managed_engine(deployment: DeploymentSettings, context: EngineContext) -> ChatBackend:
    """A managed llama-server for ``deployment.model_path`` (not started).

    Raises:
        ConfigError: the deployment names no ``model_path`` (it then reuses the ``[engine]`` model,
            which the routing table resolves without a factory).
    """
    from sovereign.backends.managed import ManagedLlamaServer

    if deployment.model_path is None:
        raise ConfigError(f"backends.deployments[{deployment.name}]: an embedded engine of its own needs model_path.")
    engine = context.settings.engine
    own = engine.model_copy(update={"model_path": deployment.model_path,
                                    "n_ctx": deployment.context_window or engine.n_ctx})
    return ManagedLlamaServer(settings=own, name=deployment.served_model or deployment.name)


def remote_engine(deployment: DeploymentSettings, context: EngineContext) -> ChatBackend:
    """An OpenAI-compatible server at ``deployment.base_url`` over the shared HTTP client.

    Raises:
        ConfigError: no ``base_url``, or a ``model_path`` (that is for managed engines only).
    """
    from sovereign.backends.openai_compat import OpenAICompatBackend

    if not deployment.base_url:
        raise ConfigError(f"backends.deployments[{deployment.name}]: engine {deployment.engine} needs base_url (…/v1).")
    if deployment.model_path is not None:
        raise ConfigError(f"backends.deployments[{deployment.name}]: model_path is for engine = \"embedded\" only.")
    return OpenAICompatBackend(deployment, context.client, connect_timeout_s=context.connect_timeout_s,
                               total_timeout_s=context.total_timeout_s)


@hookimpl
def register_engines(register: Callable[[str, EngineFactory], None]) -> None:
    """``embedded`` and every remote OpenAI-compatible kind."""
    from sovereign.backends.openai_compat import PROFILES

    register("embedded", managed_engine)
    for kind in PROFILES:
        register(kind, remote_engine)
