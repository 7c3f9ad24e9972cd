"""Byte quantities: parsing ``24GiB`` / ``16 GB`` / ``8192MiB`` and printing them.

Binary units (KiB, MiB, GiB, TiB) are powers of 1024; decimal units (kB, MB, GB, TB) powers of 1000
(IEC 80000-13). A bare number is bytes. GPU memory is sold and reported by NVML in binary units
even where the box says "GB", so ``8GB`` on a Tesla P4 datasheet means 8 GiB: pass ``8GiB``.
"""

from __future__ import annotations

import re

from sovereign.errors import InvalidRequestError

KiB = 1024
MiB = 1024**2
GiB = 1024**3

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": KiB, "mib": MiB, "gib": GiB, "tib": 1024**4,
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str, *, field: str = "gpu_memory") -> int:
    """``"24GiB"`` -> ``25769803776``.

    Args:
        text: a number and an optional unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB; case-insensitive).
        field: the option or field name, used in the error message.

    Raises:
        InvalidRequestError: the text is not a positive number with a known unit (``param=field``).
    """
    match = _PATTERN.match(text or "")
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise InvalidRequestError(
            f"{field}: cannot parse {text!r} as a size; write it like 24GiB, 16GB or 8192MiB.", param=field
        )
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise InvalidRequestError(f"{field}: {text!r} must be larger than zero.", param=field)
    return value


def parse_bandwidth(text: str, *, field: str = "bandwidth") -> float:
    """``"576GB/s"`` -> bytes per second (``/s`` optional; same units as :func:`parse_bytes`)."""
    return float(parse_bytes(re.sub(r"/s\s*$", "", text or "", flags=re.I), field=field))


def gib(n: float) -> str:
    """Bytes as GiB with two decimals, e.g. ``'7.49 GiB'``."""
    return f"{n / GiB:.2f} GiB"
