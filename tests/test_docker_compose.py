"""docker-compose.yml is validated statically: no Docker engine exists on the build machines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose-style ${VAR:-default} substitution (env empty = what `docker compose up` does by default)."""
    env = env or {}
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def parse_port(spec: str | dict, env: dict[str, str] | None = None) -> tuple[str | None, str, str]:
    """(host_ip, host_port, container_port) from a short ("ip:host:container") or long port syntax."""
    if isinstance(spec, dict):
        return spec.get("host_ip"), str(spec.get("published", "")), str(spec["target"])
    parts = interpolate(str(spec), env).split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return None, "", parts[0]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_three_services_milvus_26_with_etcd_and_minio(compose):
    services = compose["services"]
    assert set(services) == {"etcd", "minio", "milvus"}
    assert re.fullmatch(r"milvusdb/milvus:v2\.[56]\.\d+", services["milvus"]["image"])
    assert services["milvus"]["command"] == ["milvus", "run", "standalone"]
    env = services["milvus"]["environment"]
    assert env["ETCD_ENDPOINTS"] == "etcd:2379" and env["MINIO_ADDRESS"] == "minio:9000"


@pytest.mark.parametrize("service", ["etcd", "minio", "milvus"])
def test_images_are_pinned(compose, service):
    image = compose["services"][service]["image"]
    name, _, tag = image.rpartition(":")
    assert name and tag, f"{service}: {image} has no tag"
    assert tag not in {"latest", "stable", "master", "main"}, f"{service}: floating tag {tag}"
    # A concrete release: a version with a patch number (v3.5.18, v2.6.9) or a dated MinIO release.
    assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[\w.]+)?|RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", tag), image


@pytest.mark.parametrize("service", ["etcd", "minio", "milvus"])
def test_health_checks_present(compose, service):
    check = compose["services"][service]["healthcheck"]
    assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) > 1
    assert "disable" not in check and check.get("retries", 0) >= 1


def test_milvus_waits_for_healthy_dependencies(compose):
    depends = compose["services"]["milvus"]["depends_on"]
    assert {name: d["condition"] for name, d in depends.items()} == {
        "etcd": "service_healthy",
        "minio": "service_healthy",
    }


def test_ports_bound_to_localhost_by_default(compose):
    published = []
    for name, service in compose["services"].items():
        for spec in service.get("ports", []):
            host_ip, host_port, container = parse_port(spec)
            assert host_ip == "127.0.0.1", f"{name} publishes {spec!r} beyond localhost"
            published.append((name, host_port, container))
    assert ("milvus", "19530", "19530") in published
    # etcd and MinIO are reachable only on the compose network.
    assert {name for name, _, _ in published} == {"milvus"}


def test_bind_address_is_an_explicit_opt_in(compose):
    spec = compose["services"]["milvus"]["ports"][0]
    assert parse_port(spec, {"MMRAG_MILVUS_BIND": "0.0.0.0"})[0] == "0.0.0.0"


def test_data_lives_in_named_volumes(compose):
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        volumes = service.get("volumes", [])
        assert volumes, f"{name} keeps no data"
        for spec in volumes:
            source = spec["source"] if isinstance(spec, dict) else spec.split(":")[0]
            assert source in declared, f"{name}: {source} is a bind mount, not a named volume"


def test_port_parser_catches_an_open_binding():
    # The guard itself must be able to fail.
    assert parse_port("19530:19530") == (None, "19530", "19530")
    assert parse_port("0.0.0.0:9091:9091")[0] == "0.0.0.0"
