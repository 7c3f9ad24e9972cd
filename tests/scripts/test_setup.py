"""``scripts/setup.sh`` on a machine that already ran it: nothing is rebuilt, the engine is linked."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.slow
def test_a_second_setup_run_does_not_rebuild_llama_server() -> None:
    link = ROOT / ".venv" / "bin" / "llama-server"
    binary = link.resolve()
    built_at = binary.stat().st_mtime
    started = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True,
                            timeout=600, env={k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "building llama-server" not in result.stdout
    assert time.monotonic() - started < 120  # a build takes ~9 minutes on 2 cores
    assert link.resolve() == binary and binary.stat().st_mtime == built_at
    # the cache lives outside the checkout, keyed by sdist version, architecture and CPU flags
    assert not binary.is_relative_to(ROOT)
    assert binary.parent.name.startswith("0.3.36-") and (binary.parent / "LICENSE").is_file()
