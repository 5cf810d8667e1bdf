"""The vLLM Deployment, its Services (affinity), and the NetworkPolicy that keeps it private.

The pod runs model_store/contract/vllm_command.py, the one builder of the vLLM command: these tests rebuild the
line it would exec from the rendered environment and compare it with what `binllm llm export` prints.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from model_store.contract import vllm_command
from tests.chart.conftest import CHART_DIR, Render, container, helm, kind_named, kinds

LAUNCHER = "/opt/binllm/vllm_command.py"


def _vllm(render: Render, values: dict | None = None) -> dict:
    return container(kind_named(render(values), "Deployment", "vllm"), "vllm")


def _argv(render: Render, model_dir: Path, values: dict | None = None) -> list[str]:
    """The `vllm serve` line the pod's launcher execs, with the model volume replaced by `model_dir`."""
    vllm = _vllm(render, values)
    assert vllm["command"] == ["python3", LAUNCHER]
    env = {e["name"]: e["value"] for e in vllm["env"] if "value" in e}
    assert env[vllm_command.MODEL_DIR_ENV].startswith("/models/")
    return vllm_command.serve_argv(model_dir, env) + vllm.get("args", [])


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_vllm_limits_nvidia_gpus(render: Render) -> None:
    assert _vllm(render, {"vllm": {"gpus": 2}})["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_more_than_one_gpu_turns_on_tensor_parallelism(render: Render, model_dir: Path) -> None:
    assert _flag(_argv(render, model_dir, {"vllm": {"gpus": 2}}), "--tensor-parallel-size") == "2"
    assert "--tensor-parallel-size" not in _argv(render, model_dir)


def test_vllm_runs_the_launcher_with_its_gpu_profile_as_export_prints_it(
    render: Render, model_dir: Path
) -> None:
    # `binllm llm export` prints serve_argv(dir, {}) (tests/unit/model_store/llm/test_export.py): the same line.
    assert _argv(render, model_dir) == vllm_command.serve_argv(model_dir, {})


def test_vllm_model_dir_is_the_model_sub_path_of_the_artifacts_volume(render: Render) -> None:
    env = {e["name"]: e.get("value") for e in _vllm(render, {"vllm": {"model": {"subPath": "m2"}}})["env"]}
    assert env[vllm_command.MODEL_DIR_ENV] == "/models/m2"


def test_yes_no_pieces_come_from_the_models_binllm_json(render: Render, model_dir: Path) -> None:
    overrides = json.loads(_flag(_argv(render, model_dir), "--hf-overrides"))
    assert overrides["classifier_from_token"] == ["ĠNo", "ĠYes"]
    assert overrides["architectures"] == ["LlamaForSequenceClassification"]


def test_chart_holds_no_token_pieces_and_no_vllm_flags_of_its_own() -> None:
    paths = [CHART_DIR / "values.yaml", *(p for p in (CHART_DIR / "templates").rglob("*") if p.is_file())]
    found = {
        (path.name, word)
        for path in paths
        for word in ("▁", "Ġ", "hf-overrides", "classifier_from_token", "--runner", "--enable-prefix-caching")
        if word in path.read_text()
    }
    assert found == set()


def test_chart_values_reach_the_command_through_the_launcher(render: Render, model_dir: Path) -> None:
    values = {
        "vllm": {
            "dtype": "float16",
            "maxModelLen": 4096,
            "blockSize": 32,
            "maxNumBatchedTokens": 8192,
            "maxNumSeqs": 128,
            "gpuMemoryUtilization": 0.8,
            "extraArgs": ["--swap-space", "4"],
        }
    }
    argv = _argv(render, model_dir, values)
    wanted = {
        "--dtype": "float16",
        "--max-model-len": "4096",
        "--block-size": "32",
        "--max-num-batched-tokens": "8192",
        "--max-num-seqs": "128",
        "--gpu-memory-utilization": "0.8",
    }
    assert {flag: _flag(argv, flag) for flag in wanted} == wanted
    assert argv[-2:] == ["--swap-space", "4"]


def test_chart_sets_only_variables_the_launcher_reads(render: Render) -> None:
    names = {e["name"] for e in _vllm(render, {"vllm": {"maxNumSeqs": 64, "dtype": "float16"}})["env"]}
    binllm = {n for n in names if n.startswith("BINLLM_")}
    assert binllm <= vllm_command.env_names()
    assert not {n for n in names if n.startswith("VLLM_") and n not in {"VLLM_CACHE_ROOT", "VLLM_API_KEY"}}


def test_values_state_the_launchers_gpu_profile(render: Render) -> None:
    """The `(profile: X)` notes in values.yaml are the launcher's GPU profile, so the docs cannot drift."""
    text = (CHART_DIR / "values.yaml").read_text()
    noted = dict(re.findall(r"# -- --([a-z-]+)[^\n]*\(profile: ([^)]+)\)", text))
    gpu = vllm_command.PROFILES["gpu"]
    assert noted == {
        "dtype": gpu.dtype,
        "max-model-len": str(gpu.max_model_len),
        "block-size": str(gpu.block_size),
        "max-num-batched-tokens": str(gpu.max_num_batched_tokens),
        "max-num-seqs": str(gpu.max_num_seqs),
        "gpu-memory-utilization": str(gpu.gpu_memory_utilization),
    }


def test_launcher_init_container_copies_the_file_the_vllm_container_runs(render: Render) -> None:
    deployment = kind_named(render(), "Deployment", "vllm")
    spec = deployment["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    api = container(kind_named(render(), "Deployment", "api"), "api")
    assert init["image"] == api["image"]  # the API image ships model_store/contract/vllm_command.py:
    assert "COPY model_store ./model_store" in (CHART_DIR.parents[1] / "docker/api.Dockerfile").read_text()
    assert init["command"][-1].endswith(f'shutil.copy(m.__file__, "{LAUNCHER}")')
    assert "model_store.contract.vllm_command" in init["command"][-1]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m for m in container(deployment, "vllm")["volumeMounts"]}
    assert (
        mounts["launcher"]["mountPath"] == init["volumeMounts"][0]["mountPath"] == str(Path(LAUNCHER).parent)
    )
    assert mounts["launcher"]["readOnly"] is True


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_vllm_probes_hit_health(render: Render, probe: str) -> None:
    vllm = container(kind_named(render(), "Deployment", "vllm"), "vllm")
    assert vllm[probe]["httpGet"]["path"] == "/health"


def test_startup_probe_allows_at_least_ten_minutes_to_load(render: Render) -> None:
    probe = container(kind_named(render(), "Deployment", "vllm"), "vllm")["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600


def test_vllm_mounts_the_artifacts_claim_read_only(render: Render) -> None:
    spec = kind_named(render(), "Deployment", "vllm")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "artifacts")
    assert volume["persistentVolumeClaim"] == {"claimName": "rel-binllm-artifacts", "readOnly": True}


def test_vllm_service_keeps_a_client_on_one_replica(render: Render) -> None:
    service = kind_named(render(), "Service", "vllm")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 10800


def test_headless_service_lists_every_vllm_pod(render: Render) -> None:
    assert kind_named(render(), "Service", "vllm-headless")["spec"]["clusterIP"] == "None"


def test_should_not_render_any_vllm_resource_when_vllm_is_disabled(render: Render) -> None:
    manifests = render({"vllm": {"enabled": False}, "api": {"backend": "local"}})
    assert not [m for m in manifests if m["metadata"]["labels"]["app.kubernetes.io/component"] == "vllm"]


def test_should_refuse_backend_vllm_without_vllm(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"api\.backend=vllm needs vllm\.enabled"):
        render({"vllm": {"enabled": False}})


def test_network_policy_admits_only_api_pods_to_vllm(render: Render) -> None:
    manifests = render()
    policy = kind_named(manifests, "NetworkPolicy", "vllm")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    api_labels = kind_named(manifests, "Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= api_labels.items()
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"


def test_network_policy_selects_the_vllm_pods(render: Render) -> None:
    manifests = render()
    selector = kind_named(manifests, "NetworkPolicy", "vllm")["spec"]["podSelector"]["matchLabels"]
    vllm_labels = kind_named(manifests, "Deployment", "vllm")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= vllm_labels.items()


def test_network_policy_takes_extra_peers_for_prometheus(render: Render) -> None:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    policy = kind_named(
        render({"vllm": {"networkPolicy": {"extraIngressFrom": [peer]}}}), "NetworkPolicy", "vllm"
    )
    assert peer in policy["spec"]["ingress"][0]["from"]


def test_should_not_render_the_vllm_network_policy_when_disabled(render: Render) -> None:
    manifests = render({"vllm": {"networkPolicy": {"enabled": False}}})
    assert "rel-binllm-vllm" not in [m["metadata"]["name"] for m in kinds(manifests, "NetworkPolicy")]


def test_api_key_reaches_vllm_from_the_secret(render: Render) -> None:
    manifests = render({"secret": {"vllmApiKey": "k"}})
    env = container(kind_named(manifests, "Deployment", "vllm"), "vllm")["env"]
    key = next(e for e in env if e["name"] == "VLLM_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "rel-binllm", "key": "BINLLM_VLLM__API_KEY"}
    assert kind_named(manifests, "Secret", "")["stringData"]["BINLLM_VLLM__API_KEY"] == "k"
