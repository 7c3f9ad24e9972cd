"""The canary route the rollout tests and ``bench/rollout_session.py`` run on.

Model ``canary`` has two deployments: ``local``, the embedded engine (stable, weight 1), and
``cand``, the fault-injection engine at ``fault_url`` (candidate, weight 0: first picks come only
from a rollout). One attempt per deployment (a retried error would hide the candidate's error
ratio), no health prober, fast flag sync and rollout checks.
"""

from __future__ import annotations

ROUTE = "canary"


def canary_config(fault_url: str, check_s: float = 0.5, sync_s: float = 0.2) -> str:
    """The TOML settings of the canary route; ``fault_url`` is the fault engine's root URL,
    ``check_s`` / ``sync_s`` are ``rollout.check_s`` / ``flags.sync_s`` in seconds."""
    return f"""
[engine]
n_ctx = 1024
n_threads = 1
[backends]
retry_attempts = 1
health_interval_s = 0
[[backends.deployments]]
name = "local"
model = "{ROUTE}"
engine = "embedded"
weight = 1
[[backends.deployments]]
name = "cand"
model = "{ROUTE}"
engine = "vllm"
base_url = "{fault_url}/v1"
served_model = "fault"
context_window = 4096
weight = 0
[flags]
sync_s = {sync_s}
[rollout]
check_s = {check_s}
"""
