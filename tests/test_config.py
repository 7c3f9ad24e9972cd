"""Settings: sources, precedence, unknown keys, and that every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovereign.config import load_settings
from sovereign.config_docs import render
from sovereign.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_serve_the_embedded_model_on_localhost() -> None:
    settings = load_settings()
    assert settings.server.host == "127.0.0.1" and settings.server.port == 8000
    assert settings.engine.model_path is None  # = the bundled SmolLM2
    assert settings.embeddings.model_name == "all-minilm-l6-v2"


def test_env_overrides_toml_which_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "sovereign.toml"
    toml.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[engine]\nn_ctx = 4096\n')
    monkeypatch.setenv("SOVEREIGN_SERVER__PORT", "9100")
    settings = load_settings(toml)
    assert settings.server.port == 9100  # env beats file
    assert settings.server.host == "0.0.0.0"  # file beats default
    assert settings.engine.n_ctx == 4096
    monkeypatch.setenv("SOVEREIGN_CONFIG", str(toml))
    assert load_settings().engine.n_ctx == 4096


@pytest.mark.parametrize(
    "toml_text",
    ['[server]\nprot = 9000\n', 'colour = "blue"\n', '[server]\nport = "many"\n', '[server\nport = 1\n'],
    ids=["misspelled-key", "unknown-top-level", "wrong-type", "toml-syntax"],
)
def test_bad_toml_is_a_config_error(tmp_path: Path, toml_text: str) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(toml_text)
    with pytest.raises(ConfigError):
        load_settings(toml)


def test_unknown_env_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_SERVER__PROT", "9000")
    with pytest.raises(ConfigError, match="SOVEREIGN_SERVER__PROT"):
        load_settings()
    monkeypatch.delenv("SOVEREIGN_SERVER__PROT")
    monkeypatch.setenv("SOVEREIGN_ENGIN__N_CTX", "1")
    with pytest.raises(ConfigError, match="engin"):
        load_settings()


def test_invalid_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_SERVER__PORT", "99999")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_settings()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_every_setting_is_documented() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), "regenerate: python -m sovereign.config_docs > docs/configuration.md"
    from sovereign.config import Settings

    for name, field in Settings.model_fields.items():
        assert field.description, name
