"""``OrjsonResponse``: JSON responses rendered with orjson (fast, numpy-aware).

FastAPI deprecated its own ``ORJSONResponse``; this is the same few lines on Starlette's
``JSONResponse``, used for every JSON body the gateway sends.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """A JSON response serialised with ``orjson.dumps`` (``OPT_SERIALIZE_NUMPY``)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
