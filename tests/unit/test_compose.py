"""docker-compose.yml wiring: services, start order and health checks (reads the file only).

`docker compose config` validates the schema where Docker is installed; these tests pin the
behaviour we rely on and run everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: a dependency of litestar

from coalition.platform.settings import DEV_JWT_SECRET

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
APP_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the `<<: *app` merges
    assert "version" not in compose, "the top-level `version` key is obsolete"
    return compose["services"]  # type: ignore[no-any-return]


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def test_all_services_present(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "redis", *APP_SERVICES} <= services.keys()


def test_migrate_is_a_one_shot_before_api_and_worker(services: dict[str, dict[str, Any]]) -> None:
    assert _command(services["migrate"]) == "coalition migrate"
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_commands(services: dict[str, dict[str, Any]]) -> None:
    assert _command(services["api"]).startswith("coalition serve ")
    assert "--host 0.0.0.0" in _command(services["api"])
    assert _command(services["worker"]) == "coalition worker"


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    long_running = [name for name, svc in services.items() if svc.get("restart") != "no"]
    assert set(long_running) == {"postgres", "redis", "api", "worker"}
    for name in long_running:
        healthcheck = services[name].get("healthcheck") or {}
        assert healthcheck.get("test") and not healthcheck.get("disable"), name
    assert "/health/ready" in " ".join(services["api"]["healthcheck"]["test"])


def test_app_services_share_one_production_config(services: dict[str, dict[str, Any]]) -> None:
    envs = [services[name]["environment"] for name in APP_SERVICES]
    assert all(env == envs[0] for env in envs)
    env = envs[0]
    assert env["COALITION_ENVIRONMENT"] == "${COALITION_ENVIRONMENT:-production}"
    # Production refuses the dev secret: the local default must be valid JSON naming the
    # active kid, and must not be the dev secret.
    keys = re.fullmatch(r"\$\{COALITION_JWT_KEYS:-(.*)\}", env["COALITION_JWT_KEYS"])
    kid = re.fullmatch(r"\$\{COALITION_JWT_ACTIVE_KID:-(.*)\}", env["COALITION_JWT_ACTIVE_KID"])
    assert keys and kid
    default_keys = json.loads(keys.group(1))
    assert kid.group(1) in default_keys
    assert DEV_JWT_SECRET not in default_keys.values()
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
