"""The API Deployment, Service, HPA, PDB, Ingress and its settings: one rule per test."""

from __future__ import annotations

import pytest

from tests.chart.conftest import Render, container, helm, kind_named, kinds


def test_should_render_the_pdb_by_default(render: Render) -> None:
    pdb = kind_named(render(), "PodDisruptionBudget", "api")
    assert pdb["spec"]["minAvailable"] == 1


def test_should_not_render_the_pdb_when_api_pdb_enabled_is_false(render: Render) -> None:
    assert not kinds(render({"api": {"pdb": {"enabled": False}}}), "PodDisruptionBudget")


def test_pdb_selects_the_api_pods(render: Render) -> None:
    manifests = render()
    pdb = kind_named(manifests, "PodDisruptionBudget", "api")
    pod_labels = kind_named(manifests, "Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_should_not_set_replicas_when_the_hpa_owns_them(render: Render) -> None:
    manifests = render()
    assert "replicas" not in kind_named(manifests, "Deployment", "api")["spec"]
    hpa = kind_named(manifests, "HorizontalPodAutoscaler", "api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rel-binllm-api"


def test_should_not_render_the_hpa_when_autoscaling_is_off_and_set_replicas_instead(render: Render) -> None:
    manifests = render({"api": {"autoscaling": {"enabled": False}, "replicaCount": 3}})
    assert not kinds(manifests, "HorizontalPodAutoscaler")
    assert kind_named(manifests, "Deployment", "api")["spec"]["replicas"] == 3


def test_should_not_render_an_ingress_by_default(render: Render) -> None:
    assert not kinds(render(), "Ingress")


def test_ingress_hashes_on_the_user_id_header(render: Render) -> None:
    ingress = kind_named(render({"api": {"ingress": {"enabled": True}}}), "Ingress", "api")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_x_user_id"


def test_api_reads_settings_from_the_configmap_and_secret(render: Render) -> None:
    api = container(kind_named(render(), "Deployment", "api"), "api")
    sources = [next(iter(s.values()))["name"] for s in api["envFrom"]]
    assert sources == ["rel-binllm", "rel-binllm"]


def test_configmap_points_the_api_at_every_vllm_pod_for_user_hashing(render: Render) -> None:
    manifests = render()
    data = kind_named(manifests, "ConfigMap", "")["data"]
    kind_named(manifests, "Service", "vllm-headless")
    assert data["BINLLM_BACKEND"] == "vllm"
    assert data["BINLLM_VLLM__BASE_URL"] == "http://rel-binllm-vllm-headless:8000"
    assert data["BINLLM_VLLM__RESOLVE_REPLICAS"] == "true"
    assert data["BINLLM_STORE"] == "redis"


def test_service_routing_points_the_api_at_the_vllm_service(render: Render) -> None:
    manifests = render({"api": {"settings": {"vllmRouting": "service"}}})
    data = kind_named(manifests, "ConfigMap", "")["data"]
    kind_named(manifests, "Service", "vllm")
    assert data["BINLLM_VLLM__BASE_URL"] == "http://rel-binllm-vllm:8000"
    assert data["BINLLM_VLLM__RESOLVE_REPLICAS"] == "false"


def test_should_refuse_user_hashing_without_the_headless_service(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="vllmRouting=userHash"):
        render({"vllm": {"headlessService": {"enabled": False}}})


def test_secret_holds_the_in_chart_redis_url(render: Render) -> None:
    secret = kind_named(render(), "Secret", "")
    assert secret["stringData"]["BINLLM_REDIS_URL"] == "redis://rel-binllm-redis:6379/0"


def test_pods_roll_when_the_settings_change(render: Render) -> None:
    def checksum(values: dict) -> str:
        deployment = kind_named(render(values), "Deployment", "api")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) != checksum({"api": {"settings": {"maxCandidates": 64}}})


def test_readiness_uses_readyz_and_liveness_healthz(render: Render) -> None:
    api = container(kind_named(render(), "Deployment", "api"), "api")
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_cpu_mode_serves_the_local_backend_from_the_artifacts_volume(render: Render) -> None:
    manifests = render({"vllm": {"enabled": False}, "api": {"backend": "local"}})
    data = kind_named(manifests, "ConfigMap", "")["data"]
    assert data["BINLLM_BACKEND"] == "local"
    assert "BINLLM_VLLM__BASE_URL" not in data
    api = container(kind_named(manifests, "Deployment", "api"), "api")
    assert {"name": "artifacts", "mountPath": "/artifacts", "readOnly": True} in api["volumeMounts"]
    assert api["command"] == ["binllm-api-entrypoint"]


def test_api_runs_app_server_with_its_connection_limits_for_both_backends(render: Render) -> None:
    for backend in ("vllm", "local"):
        manifests = render({"api": {"backend": backend}})
        api = container(kind_named(manifests, "Deployment", "api"), "api")
        assert api["args"] == ["python", "-m", "app.server"]
        config = kind_named(manifests, "ConfigMap", "")["data"]
        assert (config["BINLLM_SERVER__HOST"], config["BINLLM_SERVER__PORT"]) == ("0.0.0.0", "8000")
