"""Every pod runs non-root on a read-only root filesystem, with emptyDirs where it must write."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.conftest import Render, container, helm, kind_named, pod_specs

MODES = {
    "defaults": {},
    "cpu-mode": {"vllm": {"enabled": False}, "api": {"backend": "local"}},
}


@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_every_pod_runs_as_non_root(render: Render, values: dict[str, Any]) -> None:
    for name, spec in pod_specs(render(values)):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name


@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_every_container_has_a_read_only_root_and_no_privilege_escalation(
    render: Render, values: dict[str, Any]
) -> None:
    for name, spec in pod_specs(render(values)):
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_every_container_gets_a_writable_tmp(render: Render, values: dict[str, Any]) -> None:
    for name, spec in pod_specs(render(values)):
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in empty_dirs, name


def test_prometheus_multiproc_dir_is_a_mounted_empty_dir(render: Render) -> None:
    manifests = render()
    path = kind_named(manifests, "ConfigMap", "")["data"]["PROMETHEUS_MULTIPROC_DIR"]
    deployment = kind_named(manifests, "Deployment", "api")
    mount = next(m for m in container(deployment, "api")["volumeMounts"] if m["mountPath"] == path)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume


def test_no_pod_mounts_a_service_account_token(render: Render) -> None:
    for name, spec in pod_specs(render()):
        assert spec["automountServiceAccountToken"] is False, name


def test_api_keys_go_into_the_secret_joined_by_commas(render: Render) -> None:
    secret = kind_named(render({"secret": {"apiKeys": ["key-one-12345", "key-two-67890"]}}), "Secret", "")
    assert secret["stringData"]["BINLLM_API_KEYS"] == "key-one-12345,key-two-67890"


def test_should_not_set_api_keys_by_default(render: Render) -> None:
    assert "BINLLM_API_KEYS" not in kind_named(render(), "Secret", "")["stringData"]


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_should_not_render_when_extra_env_sets_api_keys_to_nothing(render: Render, value: str) -> None:
    """A set-but-empty BINLLM_API_KEYS would start the API with authentication off; the chart refuses it."""
    env = [{"name": "BINLLM_API_KEYS", "value": value}]
    with pytest.raises(helm.HelmRenderError, match="BINLLM_API_KEYS"):
        render({"api": {"extraEnv": env}})


def test_extra_env_may_set_api_keys_that_hold_a_key(render: Render) -> None:
    env = [{"name": "BINLLM_API_KEYS", "value": "key-one-12345"}]
    deployment = kind_named(render({"api": {"extraEnv": env}}), "Deployment", "api")
    assert env[0] in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
