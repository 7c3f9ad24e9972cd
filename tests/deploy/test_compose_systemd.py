"""docker-compose stack and systemd unit: structure checks (no Docker engine here), systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.promql import DEPLOY

COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_has_the_scale_out_stack() -> None:
    assert {
        "sovereign", "vllm", "ollama", "postgres", "redis", "prometheus", "grafana", "langfuse-web",
        "langfuse-worker", "otel-collector", "alertmanager", "node-exporter", "dcgm-exporter",
    } <= set(SERVICES)
    assert "pgvector" in SERVICES["postgres"]["image"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_healthcheck_limits_and_restart(name: str) -> None:
    service = SERVICES[name]
    check = service["healthcheck"]
    assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) >= 2
    assert re.fullmatch(r"\d+s", check["interval"]) and re.fullmatch(r"\d+s", check["timeout"])
    assert check["retries"] >= 1
    limits = service["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+[MG]", limits["memory"])
    assert service["restart"] == "unless-stopped"
    assert "image" in service
    for port in service.get("ports", []):
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_depends_on_targets_exist_and_wait_for_health() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, (name, dependency)
            assert condition["condition"] in {"service_healthy", "service_started"}


def test_mounted_files_and_build_context_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in COMPOSE["volumes"] or source.startswith("/"), (name, source)
    build = SERVICES["sovereign"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_secrets_are_required_not_defaulted() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    for variable in ("POSTGRES_PASSWORD", "SOVEREIGN_API_KEYS", "GRAFANA_ADMIN_PASSWORD", "CLICKHOUSE_PASSWORD",
                     "REDIS_PASSWORD"):
        assert f"${{{variable}:?" in text
        assert f"{variable}=" in (DEPLOY / ".env.example").read_text()


def test_sovereign_toml_loads_with_the_real_settings(tmp_path: Path) -> None:
    from sovereign.config import load_settings

    settings = load_settings(DEPLOY / "sovereign.toml")
    assert settings.observability.otlp_endpoint == "http://otel-collector:4318/v1/traces"
    assert settings.server.host == "0.0.0.0"


def test_collector_and_prometheus_agree_on_ports() -> None:
    collector = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlphttp/langfuse"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prometheus["scrape_configs"]}
    assert targets["sovereign"] == ["sovereign:8000"] and {"node", "gpu"} <= set(targets)


UNIT = DEPLOY / "systemd" / "sovereign.service"


def test_systemd_unit_restart_policy_and_hardening() -> None:
    text = UNIT.read_text()
    for directive in ("Restart=on-failure", "RestartSec=", "StartLimitBurst=", "NoNewPrivileges=yes",
                      "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=",
                      "SystemCallFilter=@system-service", "ReadWritePaths=/var/lib/sovereign", "User=sovereign"):
        assert directive in text, directive


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` with ExecStart pointed at this checkout's console script."""
    executable = ROOT / ".venv" / "bin" / "sovereign"
    if not executable.exists():
        pytest.skip("no .venv/bin/sovereign to stand in for /opt/sovereign/.venv/bin/sovereign")
    unit = tmp_path / "sovereign.service"
    unit.write_text(UNIT.read_text().replace("/opt/sovereign/.venv/bin/sovereign", str(executable)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
