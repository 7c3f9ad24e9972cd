"""Byte quantities: parsing ``24GiB`` / ``16 GB`` / ``8192MiB`` and printing them.

Binary units (KiB, MiB, GiB, TiB) are powers of 1024; decimal units (kB, MB, GB, TB) powers of 1000
(IEC 80000-13), as :class:`pydantic.ByteSize` parses them. A bare number is bytes. GPU memory is
sold and reported by NVML in binary units even where the box says "GB", so ``8GB`` on a Tesla P4
datasheet means 8 GiB: pass ``8GiB``.
"""

from __future__ import annotations

import re

from pydantic import ByteSize, TypeAdapter, ValidationError

from sovereign.errors import InvalidRequestError

KiB = 1024
MiB = 1024**2
GiB = 1024**3

_BYTE_SIZE = TypeAdapter(ByteSize)
# pydantic matches only a prefix ("1,5GB" would be 1 byte, "24GiB xyz" 24 GiB): require the whole text
# to be one non-negative number and one optional unit before handing it over.
_SHAPE = re.compile(r"\s*[0-9]+(?:\.[0-9]+)?\s*[a-zA-Z]*\s*")


def parse_bytes(text: str, *, field: str = "gpu_memory") -> int:
    """``"24GiB"`` -> ``25769803776`` (bytes, an int; parsed by :class:`pydantic.ByteSize`).

    Args:
        text: a number and an optional unit, case-insensitive: B; decimal k/kB, M/MB, G/GB, T/TB
            (also PB, EB: powers of 1000); binary KiB, MiB, GiB, TiB (also PiB, EiB: powers of 1024).
        field: the option or field name, used in the error message.

    Raises:
        InvalidRequestError: the text is not a positive number with a known unit (``param=field``).
    """
    reason = "not a number with a unit"
    value = None
    if _SHAPE.fullmatch(text or ""):
        try:
            value = int(_BYTE_SIZE.validate_python(text))
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
    if value is None:
        raise InvalidRequestError(
            f"{field}: cannot parse {text!r} as a size ({reason}); write it like 24GiB, 16GB or 8192MiB.", param=field
        )
    if value <= 0:
        raise InvalidRequestError(f"{field}: {text!r} must be larger than zero.", param=field)
    return value


def parse_bandwidth(text: str, *, field: str = "bandwidth") -> float:
    """``"576GB/s"`` -> bytes per second (``/s`` optional; same units as :func:`parse_bytes`)."""
    return float(parse_bytes(re.sub(r"/s\s*$", "", text or "", flags=re.I), field=field))


def gib(n: float) -> str:
    """Bytes as GiB with two decimals, e.g. ``'7.49 GiB'``."""
    return f"{n / GiB:.2f} GiB"
