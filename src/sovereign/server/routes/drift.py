"""Drift detection on live traffic over HTTP, for operators (``require_admin``):

- ``GET /admin/drift``: a fresh drift report (this worker's buffer flushed first; ``?cached=true``:
  the background task's last one): ``{"object": "drift.report", "checked_at", "window_s",
  "baseline": {"id", "name", "created_at", "since", "until", "n"} | null, "thresholds", "drifted":
  [signal], "signals": [{"signal", "kind", "status", "detected", "window_n", "baseline_n", "tests":
  [{"test", "statistic", "p_value"}], "chart": {"labels", "baseline", "window"}}], "recorder"}``.
- ``POST /admin/drift/baseline`` ``{"since": seconds}`` (optional, default ``drift.window_s``):
  make the last ``since`` seconds of traffic the baseline -> ``{"object": "drift.baseline", ...summary}``.

Errors: 503 when drift detection is off (``drift.enabled = false`` or no ``mlops`` extra); 400 a
``since`` that is not a positive number, or a window without traffic.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from sovereign.server.schemas import UnicodeChecked
from sovereign.server.state import get_state, require_admin

router = APIRouter(dependencies=[Depends(require_admin)])


class BaselineBody(UnicodeChecked):
    """Which traffic becomes the baseline: the last ``since`` seconds (default ``drift.window_s``)."""

    since: float | None = Field(None, gt=0, le=90 * 86400)


@router.get("/admin/drift")
async def drift_report(request: Request, cached: bool = False) -> dict[str, Any]:
    monitor = get_state(request).require_drift()
    if cached and monitor.report is not None:
        return monitor.report
    await monitor.flush()
    return await monitor.check()


@router.post("/admin/drift/baseline")
async def capture_baseline(request: Request, body: BaselineBody | None = None) -> dict[str, Any]:
    summary = await get_state(request).require_drift().capture_baseline(body.since if body else None)
    return {"object": "drift.baseline", **summary}
