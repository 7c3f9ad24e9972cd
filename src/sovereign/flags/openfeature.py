"""An OpenFeature provider over a Sovereign gateway's flags (the ``openfeature`` extra).

Applications evaluate Sovereign's flags through the standard API
(https://openfeature.dev/specification/sections/providers)::

    from openfeature import api
    from sovereign.flags.openfeature import SovereignProvider

    api.set_provider(SovereignProvider("http://127.0.0.1:8000", api_key="sk-..."))
    client = api.get_client()
    client.get_boolean_value("semantic_cache", False, EvaluationContext(targeting_key="user-42"))

Each evaluation is ``POST /v1/flags/{key}/evaluate`` with the application's API key (its key id
and tenant come from it); ``targeting_key`` is the user, and context attributes named
``header:NAME`` reach header rules. Booleans resolve to the flag's on/off state, strings to its
variant. Integer, float and object flags do not exist in Sovereign: those calls, an unknown flag
or an unreachable gateway return the default with the OpenFeature error code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

_REASONS = {"DISABLED": Reason.DISABLED, "SPLIT": Reason.SPLIT, "STATIC": Reason.STATIC,
            "TARGETING_MATCH": Reason.TARGETING_MATCH}


class SovereignProvider(AbstractProvider):
    """Resolves flags against the gateway at ``url`` (seconds: ``timeout_s``)."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 5.0) -> None:
        super().__init__()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def get_metadata(self) -> Metadata:
        return Metadata(name="sovereign")

    def shutdown(self) -> None:
        self._client.close()

    def _resolve(self, key: str, default: Any, ctx: EvaluationContext | None, pick: str) -> FlagResolutionDetails[Any]:
        attributes = {k: str(v) for k, v in (ctx.attributes if ctx else {}).items() if k.startswith("header:")}
        body = {"user": ctx.targeting_key if ctx else None, "attributes": attributes}
        try:
            response = self._client.post(f"/v1/flags/{key}/evaluate", json=body)
        except httpx.HTTPError as exc:
            return FlagResolutionDetails(default, ErrorCode.GENERAL, f"gateway unreachable: {exc}", Reason.ERROR)
        if response.status_code == 404:
            return FlagResolutionDetails(default, ErrorCode.FLAG_NOT_FOUND, f"no flag {key!r}", Reason.ERROR)
        if response.status_code != 200:
            message = response.json().get("error", {}).get("message", response.text)
            return FlagResolutionDetails(default, ErrorCode.GENERAL, message, Reason.ERROR)
        result = response.json()
        return FlagResolutionDetails(result["enabled"] if pick == "enabled" else result["variant"],
                                     reason=_REASONS.get(result["reason"], result["reason"]),
                                     variant=result["variant"])

    @staticmethod
    def _mismatch(default: Any, kind: str) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(default, ErrorCode.TYPE_MISMATCH,
                                     f"Sovereign flags are boolean or string (variant), not {kind}", Reason.ERROR)

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, "enabled")

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, "variant")

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return self._mismatch(default_value, "integer")

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return self._mismatch(default_value, "float")

    def resolve_object_details(
        self, flag_key: str, default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return self._mismatch(default_value, "object")
