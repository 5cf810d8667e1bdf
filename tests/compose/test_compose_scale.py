"""Two vLLM replicas on one host: docker-compose.yml's `vllm-2` (profile `scale`) + docker-compose.scale.yml.

    docker compose -f docker-compose.yml -f docker-compose.scale.yml --profile scale up -d

Both replicas run the one launcher with one environment, each on its own GPU; the API lists both in
BINLLM_VLLM__BASE_URL and hashes users over them (app/scorers/routing.py). Without the override and the profile,
the file behaves as with one vLLM (tests/compose/test_compose_file.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.scorers.routing import ReplicaRing, replica_urls
from app.settings import ServiceSettings
from model_store.contract import vllm_command

compose_spec = pytest.importorskip("compose_spec", reason="PyPI compose-spec is not installed")

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "model_store/contract/vllm_command.py"
REPLICAS = ["vllm", "vllm-2"]
SHARED_KEYS = ["image", "entrypoint", "environment", "volumes", "ipc", "healthcheck", "restart"]


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = service["deploy"]["resources"]["reservations"]["devices"]
    return devices


def _runs_the_launcher(service: dict[str, Any]) -> bool:
    return str(service.get("entrypoint", [""])[-1]).endswith("/" + LAUNCHER.name)


def _leaves_are_mappings_or_scalars(node: Any) -> bool:
    if isinstance(node, dict):
        return all(_leaves_are_mappings_or_scalars(value) for value in node.values())
    return not isinstance(node, list)


def test_scaled_setup_parses_under_the_compose_specification(scaled: dict[str, Any]) -> None:
    parsed = compose_spec.PyCompose.from_yaml(yaml.safe_dump(scaled))
    parsed.validate()


def test_override_changes_only_the_api_with_mappings_both_compose_versions_merge_alike(
    scale_override: dict[str, Any],
) -> None:
    assert set(scale_override) == {"services"}
    assert set(scale_override["services"]) == {"api"}
    assert _leaves_are_mappings_or_scalars(scale_override)


def test_scaled_setup_runs_two_vllm_replicas_with_one_launcher_and_one_environment(
    scaled: dict[str, Any],
) -> None:
    services = scaled["services"]
    assert sorted(name for name, svc in services.items() if _runs_the_launcher(svc)) == REPLICAS
    first, second = (services[name] for name in REPLICAS)
    for key in SHARED_KEYS:
        assert first[key] == second[key], key


def test_each_replica_reserves_its_own_nvidia_gpu(scaled: dict[str, Any]) -> None:
    gpus = []
    for name in REPLICAS:
        (device,) = _gpu_devices(scaled["services"][name])
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        # `count: 1` is GPU 0 for every container, so a replica names its GPU instead (never both).
        assert "count" not in device, name
        assert len(device["device_ids"]) == 1, name
        gpus.append(device["device_ids"][0])
    assert gpus == ["0", "1"]


def test_second_replica_starts_only_with_the_scale_profile_and_stays_off_the_host(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["vllm-2"]["profiles"] == ["scale"]
    assert "ports" not in services["vllm-2"]


@pytest.mark.parametrize("name", REPLICAS)
def test_each_replica_builds_the_line_export_prints(
    services: dict[str, dict[str, Any]], name: str, model_dir: Path
) -> None:
    """The chart (tests/chart/test_vllm.py), `binllm llm export` and both Compose replicas: one command."""
    env = {k: "" if v is None else str(v) for k, v in services[name]["environment"].items()}
    env[vllm_command.MODEL_DIR_ENV] = str(model_dir)
    assert vllm_command.serve_argv(model_dir, env) == vllm_command.serve_argv(model_dir, {})
    assert (
        f"./{LAUNCHER.relative_to(REPO)}:{services[name]['entrypoint'][-1]}:ro" in services[name]["volumes"]
    )


def test_scaled_api_lists_both_replicas_and_hashes_users_over_them(
    scaled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = scaled["services"]
    api_env = services["api"]["environment"]
    urls = [f"http://{name}:{services[name]['environment']['BINLLM_SERVE_PORT']}" for name in REPLICAS]
    for key in [k for k in os.environ if k.startswith("BINLLM_")]:
        monkeypatch.delenv(key)
    for key, value in api_env.items():
        if key.startswith("BINLLM_"):
            monkeypatch.setenv(key, str(value))
    settings = ServiceSettings()
    assert settings.backend == "vllm" and settings.vllm.base_url is not None
    # User-hash routing over a fixed list: the comma-separated form, not the chart's DNS discovery.
    assert replica_urls(settings.vllm.base_url) == urls
    assert settings.vllm.resolve_replicas is False
    ring = ReplicaRing(urls)
    owners = [ring.owner(f"user {k}") for k in range(2000)]
    assert all(owners.count(url) > 600 for url in urls)


def test_scaled_api_waits_for_both_replicas(scaled: dict[str, Any]) -> None:
    deps = scaled["services"]["api"]["depends_on"]
    for name in ["redis", *REPLICAS]:
        assert deps[name] == {"condition": "service_healthy"}, name


def test_plain_file_keeps_one_replica_for_the_api(services: dict[str, dict[str, Any]]) -> None:
    """A one-GPU host: `docker compose up -d` starts `vllm` alone and the API neither uses nor waits on vllm-2."""
    api = services["api"]
    assert api["environment"]["BINLLM_VLLM__BASE_URL"] == "http://vllm:8000"
    assert "vllm-2" not in api["depends_on"]
    (device,) = _gpu_devices(services["vllm"])
    assert device["device_ids"] == ["0"]


def test_prometheus_scrapes_both_replicas(scaled: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "docker/prometheus/prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "vllm"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    port = scaled["services"]["vllm"]["environment"]["BINLLM_SERVE_PORT"]
    assert targets == [f"{name}:{port}" for name in REPLICAS]


def _docker_compose_v1(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (v1) is not installed")
    files = ["-f", str(REPO / "docker-compose.yml"), "-f", str(REPO / "docker-compose.scale.yml")]
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME"}}  # the defaults, as `scaled` has them
    return subprocess.run(
        ["docker-compose", *files, *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


def test_docker_compose_v1_merges_the_scaled_setup_as_these_tests_do(scaled: dict[str, Any]) -> None:
    result = _docker_compose_v1("--profile", "scale", "config")
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)["services"]
    assert merged["api"]["environment"] == {
        k: str(v) for k, v in scaled["services"]["api"]["environment"].items()
    }
    assert set(merged["api"]["depends_on"]) == set(scaled["services"]["api"]["depends_on"])
    for name in REPLICAS:
        assert merged[name]["deploy"] == scaled["services"][name]["deploy"], name
