"""Render ``docs/configuration.md`` from :class:`~sovereign.config.Settings` (the single source).

``python -m sovereign.config_docs > docs/configuration.md`` regenerates it; a test fails when the
committed file differs, so every setting is documented with its type, default and help text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sovereign.config import ENV_PREFIX, Settings


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""
    else:
        value = field.default
    if isinstance(value, Path) and value.is_relative_to(Path.home()):
        return f"`~/{value.relative_to(Path.home()).as_posix()}`"
    return f"`{value!r}`"


def render() -> str:
    """The Markdown text of docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        "Generated from `src/sovereign/config.py` by `python -m sovereign.config_docs`; do not edit by hand.",
        "",
        "Settings come from, highest priority first: CLI flags, `SOVEREIGN_*` environment variables",
        "(sections nested with `__`, e.g. `SOVEREIGN_SERVER__PORT=9000`), the TOML file named by",
        "`SOVEREIGN_CONFIG` or `--config` (sections as tables: `[server]` / `port = 9000`), then defaults.",
        "Unknown keys and unknown `SOVEREIGN_*` variables are errors. Secrets are never written in the",
        "file: settings ending in `_env` name the environment variable that holds the secret.",
        "",
    ]
    top = [(n, f) for n, f in Settings.model_fields.items()
           if not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))]
    lines += ["## Top level", "", "| setting | environment variable | default | description |", "|---|---|---|---|"]
    lines += [f"| `{n}` | `{ENV_PREFIX}{n.upper()}` | {_default(f)} | {f.description} |" for n, f in top]
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        lines += ["", f"## `[{name}]`: {field.description}", "",
                  "| setting | environment variable | default | description |", "|---|---|---|---|"]
        for key, sub in section.model_fields.items():
            env = f"{ENV_PREFIX}{name.upper()}__{key.upper()}"
            lines.append(f"| `{key}` | `{env}` | {_default(sub)} | {sub.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
