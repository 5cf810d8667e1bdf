"""docker-compose.yml: valid under the Compose specification, and its cross-references hold.

The Compose spec parser (PyPI `compose-spec`, the Rust `compose_spec` crate) refuses unknown keys and bad
values; the tests below check what a schema cannot: that names point at things that exist.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

compose_spec = pytest.importorskip("compose_spec", reason="PyPI compose-spec is not installed")
ComposeSpecification, PyCompose = compose_spec.ComposeSpecification, compose_spec.PyCompose

REPO = Path(__file__).resolve().parents[2]

# Bind-mount sources that the offline job creates on the host; every other source must be in the repository.
RUNTIME_DIRS = {"./artifacts", "./data", "./models", "./artifacts/model"}
DEFAULT_SERVICES = {"redis", "vllm", "api", "prometheus", "grafana"}


def _volume_entries(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax volume of a service."""
    entries = []
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        entries.append((source, target))
    return entries


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    return {name: {"condition": "service_started"} for name in deps} if isinstance(deps, list) else deps


def _reserves_gpu(service: dict[str, Any]) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any("gpu" in device.get("capabilities", []) for device in devices)


def test_compose_file_parses_under_the_compose_specification(compose_text: str) -> None:
    parsed = PyCompose.from_yaml(compose_text)
    parsed.validate()
    assert isinstance(parsed.to_spec(), ComposeSpecification)


def test_compose_spec_parser_refuses_an_unknown_service_key(compose_text: str) -> None:
    broken = compose_text.replace("  redis:\n", "  redis:\n    restart_policy: always\n", 1)
    with pytest.raises(ValueError, match="restart_policy"):
        PyCompose.from_yaml(broken)


def test_every_named_volume_used_by_a_service_is_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _ in _volume_entries(service):
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_every_declared_volume_is_used(compose: dict[str, Any]) -> None:
    used = {s for svc in compose["services"].values() for s, _ in _volume_entries(svc)}
    assert set(compose.get("volumes") or {}) <= used


def test_every_bind_mounted_repository_file_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for source, _ in _volume_entries(service):
            if source.startswith("./") and source not in RUNTIME_DIRS:
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_every_build_names_an_existing_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    builds = [svc["build"] for svc in services.values() if "build" in svc]
    assert builds
    for build in builds:
        assert (REPO / build["context"] / build["dockerfile"]).is_file()


def test_depends_on_names_only_defined_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert set(_depends_on(service)) <= set(services), name


def test_service_healthy_dependencies_define_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dep, spec in _depends_on(service).items():
            if spec["condition"] == "service_healthy":
                assert "test" in services[dep].get("healthcheck", {}), f"{name} waits on {dep}"


def test_api_waits_for_healthy_redis_and_vllm(services: dict[str, dict[str, Any]]) -> None:
    deps = _depends_on(services["api"])
    assert deps["redis"]["condition"] == "service_healthy"
    assert deps["vllm"]["condition"] == "service_healthy"


def test_profiled_dependencies_of_default_services_are_optional(services: dict[str, dict[str, Any]]) -> None:
    for name in DEFAULT_SERVICES:
        for dep, spec in _depends_on(services[name]).items():
            if services[dep].get("profiles"):
                assert spec.get("required") is False, f"{name} would need profile of {dep}"


def test_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    host_ports = [str(p).rsplit(":", 1)[0] for svc in services.values() for p in svc.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports


def test_redis_and_vllm_are_not_published_on_the_host(services: dict[str, dict[str, Any]]) -> None:
    for name in ["redis", "vllm", "vllm-2"]:
        assert "ports" not in services[name], name


def test_profiles_split_default_stack_job_publisher_and_cpu_api(services: dict[str, dict[str, Any]]) -> None:
    unprofiled = {name for name, svc in services.items() if not svc.get("profiles")}
    assert unprofiled == DEFAULT_SERVICES
    assert services["publish"]["profiles"] == ["publish"]
    assert services["api-cpu"]["profiles"] == ["cpu"]
    assert services["job"]["profiles"] == ["job"]
    assert services["vllm-2"]["profiles"] == ["scale"]  # the second GPU (tests/compose/test_compose_scale.py)


def test_publisher_is_a_one_shot_job(services: dict[str, dict[str, Any]]) -> None:
    assert services["publish"]["restart"] == "no"
    assert services["publish"]["command"][0] == "publish"


def test_cpu_profile_stack_reserves_no_gpu(services: dict[str, dict[str, Any]]) -> None:
    wanted, stack = set(), ["api-cpu", "prometheus", "grafana"]
    while stack:
        name = stack.pop()
        wanted.add(name)
        stack += [d for d, s in _depends_on(services[name]).items() if s.get("required", True)]
    assert "vllm" not in wanted
    assert not [name for name in wanted if _reserves_gpu(services[name])]
    assert services["api-cpu"]["environment"]["BINLLM_BACKEND"] == "local"


def test_vllm_reserves_an_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    devices = services["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]


def test_vllm_healthcheck_hits_health_with_a_long_start_period(services: dict[str, dict[str, Any]]) -> None:
    check = services["vllm"]["healthcheck"]
    assert any("/health" in part for part in check["test"])
    assert int(str(check["start_period"]).removesuffix("s")) >= 300


def test_vllm_mounts_the_model_read_only(services: dict[str, dict[str, Any]]) -> None:
    model_dir = services["vllm"]["environment"]["BINLLM_MODEL_DIR"]
    assert f"./artifacts/model:{model_dir}:ro" in services["vllm"]["volumes"]


def test_api_points_at_the_vllm_and_redis_services(services: dict[str, dict[str, Any]]) -> None:
    env = services["api"]["environment"]
    assert env["BINLLM_VLLM__BASE_URL"] == "http://vllm:8000"
    assert env["BINLLM_REDIS_URL"].startswith("redis://redis:6379")
    assert services["publish"]["command"][-1] == env["BINLLM_REDIS_URL"]


def test_images_are_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: {image}"


def test_redis_config_turns_on_aof_and_rdb_persistence() -> None:
    lines = [ln.split() for ln in (REPO / "docker/redis/redis.conf").read_text().splitlines()]
    directives = [ln for ln in lines if ln and not ln[0].startswith("#")]
    assert ["appendonly", "yes"] in directives
    assert any(d[0] == "save" and len(d) == 3 for d in directives)
    assert ["maxmemory-policy", "noeviction"] in directives


def test_redis_healthcheck_pings(services: dict[str, dict[str, Any]]) -> None:
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_prometheus_scrapes_api_and_vllm_services(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((REPO / "docker/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]
    }
    assert {"api:8000", "vllm:8000"} <= targets
    for target in targets - {"localhost:9090"}:
        assert target.split(":")[0] in services


def test_mounted_config_files_are_valid_yaml(services: dict[str, dict[str, Any]]) -> None:
    for source, _ in _volume_entries(services["prometheus"]) + _volume_entries(services["grafana"]):
        path = REPO / source
        for file in [path] if path.is_file() else sorted(Path(path).rglob("*.yml")):
            assert yaml.safe_load(file.read_text()), file


def test_compose_file_reads_under_compose_v1(compose: dict[str, Any]) -> None:
    """Debian bookworm's docker-compose 1.29 (what scripts/container_smoke.sh runs here) refuses both."""
    assert "name" not in compose
    for name, service in compose["services"].items():
        for dep, spec in _depends_on(service).items():
            assert set(spec) <= {"condition"}, f"{name} -> {dep}: {spec}"


def test_docker_compose_v1_validates_the_file() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (v1) is not installed")
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def test_api_serves_whatever_snapshot_is_active_without_waiting_on_the_publisher(
    services: dict[str, dict[str, Any]],
) -> None:
    assert "publish" not in _depends_on(services["api"])
    assert "publish" not in _depends_on(services["api-cpu"])


def test_redis_image_is_the_official_one_unless_a_local_one_is_named(
    services: dict[str, dict[str, Any]], compose_with: Callable[[dict[str, str]], dict[str, Any]]
) -> None:
    assert services["redis"]["image"].startswith("redis:")
    local = compose_with({"BINLLM_REDIS_IMAGE": "local/redis:1"})
    assert local["services"]["redis"]["image"] == "local/redis:1"


def test_publisher_and_cpu_api_read_one_artifacts_directory(services: dict[str, dict[str, Any]]) -> None:
    """The smoke run points both at a staged copy of `make demo`'s output with BINLLM_ARTIFACTS_DIR."""
    assert "./artifacts:/artifacts:ro" in services["publish"]["volumes"]
    assert "./artifacts:/artifacts:ro" in services["api-cpu"]["volumes"]
    text = (REPO / "docker-compose.yml").read_text()
    assert text.count("${BINLLM_ARTIFACTS_DIR:-./artifacts}:/artifacts:ro") == 2


def test_publisher_reads_the_splits_where_the_job_does(services: dict[str, dict[str, Any]]) -> None:
    data_mount = next(v for v in services["job"]["volumes"] if v.endswith(":/data:ro"))
    assert data_mount in services["publish"]["volumes"]
    command = services["publish"]["command"]
    assert command[command.index("--data") + 1] == "/data"


def test_cpu_api_serves_with_app_server_on_every_interface(services: dict[str, dict[str, Any]]) -> None:
    api_cpu = services["api-cpu"]
    assert api_cpu["command"] == ["python", "-m", "app.server"]
    assert api_cpu["environment"]["BINLLM_SERVER__HOST"] == "0.0.0.0"
