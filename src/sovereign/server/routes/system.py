"""``GET /v1/system``: the hardware doctor's report (admin only)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from sovereign.server.schemas import ERROR_RESPONSES
from sovereign.server.state import require_admin

router = APIRouter(dependencies=[Depends(require_admin)], responses=ERROR_RESPONSES)


@router.get("/v1/system")
async def system() -> dict[str, Any]:
    """CPU, RAM, instruction sets, GPUs (NVML), disks and which engines can run on this host.

    Probing reads /proc and NVML, so it runs in a worker thread, off the event loop.
    """
    from sovereign.hardware.report import system_report

    report = await asyncio.to_thread(system_report)
    return {"object": "system", **report}
