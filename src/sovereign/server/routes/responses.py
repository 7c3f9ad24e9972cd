"""``POST /v1/responses``: the OpenAI Responses API."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
