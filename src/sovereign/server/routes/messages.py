"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic Messages API."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
