"""onnxruntime, imported once with its telemetry off.

The official onnxruntime wheels ship Microsoft telemetry switched on: about 10 s after the first
inference session starts, a native thread resolves a collector's address and writes a device id
under ``~/.cache/Microsoft`` (seen by ``tests/security/test_zero_egress.py`` through strace).
``ORT_DISABLE_TELEMETRY=1`` before the library loads turns it off; a value the operator set is
kept. Import onnxruntime from here, never directly.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime

__all__ = ["onnxruntime"]
