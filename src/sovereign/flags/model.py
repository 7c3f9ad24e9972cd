"""Flag definitions, the flags file and its load-time checks.

A flag is ``boolean`` (on/off), ``percentage`` (on for a sticky share of subjects) or ``variant``
(one of several named variants by weight). Every flag may depend on others: it is off whenever one
of them is off. Rules target subjects by API key id, tenant, user or a request header before any
percentage applies.

Two file shapes load (:func:`load_flags_file`):

- TOML, Sovereign's own::

      [flags.semantic_cache]
      kind = "percentage"          # boolean | percentage | variant
      percentage = 25.0
      depends_on = ["ai_inference"]
      rules = [{ attribute = "tenant", values = ["lab"], serve = "on" }]

- JSON in the seed's ``feature-flags.json`` shape: ``{"features": {NAME: {"enabled",
  "rollout_percentage", "dependencies", "description", ...}}}`` (``features`` may also be a list of
  objects with a ``name``); other keys (timestamps, tags, strategy) are kept as ``metadata``. A seed
  feature whose ``rollout_percentage`` is below 100 becomes a ``percentage`` flag.

Errors: a cycle among dependencies, a dependency on an unknown flag, variant weights that do not
add up, or a malformed file raise :class:`~sovereign.errors.ConfigError` naming the flag.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sovereign.errors import ConfigError

Kind = Literal["boolean", "percentage", "variant"]
OFF = "off"
ON = "on"


class Rule(BaseModel):
    """Serve ``serve`` (``"on"``, ``"off"`` or a variant name) when the subject's ``attribute`` is one
    of ``values``. ``attribute``: ``api_key`` (the key's id, never the secret), ``tenant``, ``user``
    or ``header:NAME`` (a request header, name case-insensitive)."""

    model_config = ConfigDict(extra="forbid")
    attribute: str = Field(pattern=r"^(api_key|tenant|user|header:[A-Za-z0-9_-]+)$")
    values: list[str] = Field(min_length=1)
    serve: str = ON


class Flag(BaseModel):
    """One flag. ``percentage`` is 0..100 (``percentage`` kind); ``variants`` maps variant name to a
    weight (``variant`` kind; weights are relative and must sum to more than 0)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Kind = "boolean"
    enabled: bool = True
    percentage: float = Field(100.0, ge=0.0, le=100.0)
    variants: dict[str, float] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("variants")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()):
            raise ValueError("variant weights must be >= 0")
        return v

    @model_validator(mode="after")
    def _variants_for_kind(self) -> Flag:
        if self.kind == "variant" and sum(self.variants.values()) <= 0:
            raise ValueError("a variant flag needs variants with a positive total weight")
        return self


# The seed deployment's seven flags, all on: without a flags file Sovereign behaves as it always did.
BUILTIN_FLAGS: tuple[Flag, ...] = (
    Flag(name="ai_inference", description="Every generation route (chat, completions, responses, messages)."),
    Flag(name="vector_search", depends_on=["ai_inference"], description="The RAG models (retrieval)."),
    Flag(name="semantic_cache", depends_on=["ai_inference"], description="The response cache (lookups and stores)."),
    Flag(name="triton_gpu_acceleration", depends_on=["ai_inference"],
         description="GPU offload of the managed engine (engine.n_gpu_layers; off = 0); read at engine start."),
    Flag(name="batch_inference", depends_on=["ai_inference"],
         description="The managed engine's parallel slots (engine.parallel; off = 1 slot); read at engine start."),
    Flag(name="cost_optimization", depends_on=["ai_inference"],
         description="Serve semantic (near-duplicate) cache hits, not only exact ones."),
    Flag(name="advanced_monitoring", description="Export per-request trace spans (when an OTLP endpoint is set)."),
)


def check_flags(flags: Iterable[Flag]) -> dict[str, Flag]:
    """The flags by name, checked as a set.

    Raises:
        ConfigError: a duplicate name, a dependency on an unknown flag, or a dependency cycle.
    """
    by_name: dict[str, Flag] = {}
    for flag in flags:
        if flag.name in by_name:
            raise ConfigError(f"Flag {flag.name!r} is defined twice.")
        by_name[flag.name] = flag
    for flag in by_name.values():
        unknown = [d for d in flag.depends_on if d not in by_name]
        if unknown:
            raise ConfigError(f"Flag {flag.name!r} depends on unknown flag(s) {', '.join(map(repr, unknown))}.")
    try:
        tuple(TopologicalSorter({f.name: f.depends_on for f in by_name.values()}).static_order())
    except CycleError as exc:
        raise ConfigError(f"Flag dependencies form a cycle: {' -> '.join(exc.args[1])}.") from exc
    return by_name


def _seed_feature(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """One feature of the seed's ``feature-flags.json`` as :class:`Flag` fields."""
    percentage = float(raw.get("rollout_percentage", raw.get("percentage", 100)))
    known = {"name", "enabled", "rollout_percentage", "percentage", "dependencies", "description"}
    return {
        "name": name,
        "kind": "percentage" if percentage < 100 else "boolean",
        "enabled": bool(raw.get("enabled", True)),
        "percentage": percentage,
        "depends_on": list(raw.get("dependencies", [])),
        "description": str(raw.get("description", "")),
        "metadata": {k: v for k, v in raw.items() if k not in known},
    }


def parse_flags(data: Mapping[str, Any], source: str) -> dict[str, Flag]:
    """Flags from a parsed file (either shape). Raises ConfigError naming ``source`` and the flag."""
    if "features" in data:
        features = data["features"]
        items = features.items() if isinstance(features, Mapping) else ((f.get("name"), f) for f in features)
        raws = [_seed_feature(str(name), raw) for name, raw in items]
    elif "flags" in data and isinstance(data["flags"], Mapping):
        raws = [{"name": name, **raw} for name, raw in data["flags"].items()]
    else:
        raise ConfigError(f"{source}: expected a [flags.NAME] table (TOML) or a \"features\" object (JSON).")
    flags = []
    for raw in raws:
        try:
            flags.append(Flag.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "flag"
            raise ConfigError(f"{source}: flag {raw.get('name')!r}: {where}: {first['msg']}.") from exc
    try:
        return check_flags(flags)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}") from exc


def load_flags_file(path: Path | None) -> dict[str, Flag]:
    """The flags of ``path`` (``.toml`` or ``.json``), or :data:`BUILTIN_FLAGS` when ``path`` is None.

    Raises:
        ConfigError: unreadable or malformed file, or a flag set that fails :func:`check_flags`.
    """
    if path is None:
        return check_flags(BUILTIN_FLAGS)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the flags file {path}: {exc.strerror or exc}.") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}.") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected an object at the top level.")
    return parse_flags(data, str(path))
