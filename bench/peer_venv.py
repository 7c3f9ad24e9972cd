"""A peer system's own virtual environment for the benchmarks (LiteLLM, GPTCache, torch), made once.

The venv counts as ready only after every install step succeeded (a marker file written last), so
an interrupted or failed install is retried on the next run instead of leaving a half-made venv
that later runs would take for a working one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MARKER = ".sovereign-bench-ready"


def peer_python(venv: Path, *installs: list[str], label: str) -> Path | None:
    """The interpreter of ``venv``, created with ``pip install`` of each of ``installs`` in order.

    Args:
        venv: where the venv lives (kept between runs).
        installs: argument lists for ``pip install`` (e.g. ``["torch==2.13.0"]``), run in order.
        label: the bench name for progress and failure lines (stderr).

    Returns:
        ``venv/bin/python``, or None when an install step failed (the bench then measures without
        the peer and says so).
    """
    python = venv / "bin" / "python"
    if (venv / MARKER).exists():
        return python
    print(f"{label}: installing {' '.join(a for step in installs for a in step)} into {venv} (once)...",
          file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for step in installs:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *step], check=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"{label}: install into {venv} failed ({exc}); measuring without it", file=sys.stderr)
        return None
    (venv / MARKER).write_text("ok\n")
    return python
