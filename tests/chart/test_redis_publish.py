"""Redis (in-chart StatefulSet or external URL) and the publish Job."""

from __future__ import annotations

import pytest

from tests.chart.conftest import Render, container, helm, kind_named, kinds

EXTERNAL = {"redis": {"enabled": False, "external": {"url": "rediss://u:p@redis.example:6380/0"}}}


def test_in_chart_redis_persists_with_aof_and_rdb(render: Render) -> None:
    sts = kind_named(render(), "StatefulSet", "redis")
    args = container(sts, "redis")["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--save") + 1]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_in_chart_redis_is_probed_with_ping(render: Render) -> None:
    redis = container(kind_named(render(), "StatefulSet", "redis"), "redis")
    assert redis["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]


def test_should_not_render_redis_when_an_external_url_is_given(render: Render) -> None:
    manifests = render(EXTERNAL)
    assert not kinds(manifests, "StatefulSet")
    assert "rel-binllm-redis" not in [m["metadata"]["name"] for m in kinds(manifests, "Service")]


def test_external_redis_url_goes_into_the_secret(render: Render) -> None:
    secret = kind_named(render(EXTERNAL), "Secret", "")
    assert secret["stringData"]["BINLLM_REDIS_URL"] == "rediss://u:p@redis.example:6380/0"


CLUSTER = {
    "redis": {"enabled": False, "external": {"url": "redis://redis-cluster.example:6379", "cluster": True}}
}


def test_an_external_redis_cluster_is_announced_to_the_api_and_the_publish_job(render: Render) -> None:
    manifests = render(CLUSTER)
    assert kind_named(manifests, "ConfigMap", "")["data"]["BINLLM_REDIS_CLUSTER"] == "true"
    job = container(kind_named(manifests, "Job", "publish"), "publish")
    assert {"name": "BINLLM_REDIS_CLUSTER", "value": "true"} in job["env"]
    assert not kinds(manifests, "StatefulSet")


def test_should_not_announce_a_cluster_by_default(render: Render) -> None:
    assert kind_named(render(), "ConfigMap", "")["data"]["BINLLM_REDIS_CLUSTER"] == "false"


def test_should_refuse_a_cluster_flag_with_the_in_chart_redis(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"redis\.enabled=false"):
        render({"redis": {"external": {"cluster": True}}})


def test_should_refuse_no_redis_at_all(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"redis\.external\.url"):
        render({"redis": {"enabled": False}})


def test_should_not_render_a_secret_when_an_existing_one_is_named(render: Render) -> None:
    manifests = render({"secret": {"existingSecret": "mine"}})
    assert not kinds(manifests, "Secret")
    api = container(kind_named(manifests, "Deployment", "api"), "api")
    assert {"secretRef": {"name": "mine"}} in api["envFrom"]


def test_redis_network_policy_admits_api_and_publish_pods_only(render: Render) -> None:
    policy = kind_named(render(), "NetworkPolicy", "redis")
    components = {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in policy["spec"]["ingress"][0]["from"]
    }
    assert components == {"api", "publish"}


def test_publish_job_is_a_post_install_and_post_upgrade_hook(render: Render) -> None:
    job = kind_named(render(), "Job", "publish")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_should_render_a_plain_job_when_helm_hook_is_false(render: Render) -> None:
    job = kind_named(render({"publishJob": {"helmHook": False}}), "Job", "publish")
    assert "annotations" not in job["metadata"]


def test_should_not_render_the_publish_job_when_disabled(render: Render) -> None:
    assert not kinds(render({"publishJob": {"enabled": False}}), "Job")


def test_publish_job_reads_the_artifacts_and_writes_to_the_secret_redis_url(render: Render) -> None:
    publish = container(kind_named(render(), "Job", "publish"), "publish")
    args = publish["args"]
    assert args[0] == "publish"
    assert args[args.index("--model") + 1] == "/artifacts/model"
    assert publish["env"][0]["name"] == "BINLLM_PUBLISH_REDIS_URL"
    assert publish["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "BINLLM_REDIS_URL"


def test_publish_job_keeps_the_redis_url_off_the_command_line(render: Render) -> None:
    args = container(kind_named(render(), "Job", "publish"), "publish")["args"]
    assert "--redis" not in args and not any("REDIS_URL" in arg for arg in args)


def test_should_not_create_the_artifacts_claim_when_an_existing_one_is_named(render: Render) -> None:
    manifests = render({"artifacts": {"existingClaim": "offline-job-output"}})
    assert not kinds(manifests, "PersistentVolumeClaim")
    job = kind_named(manifests, "Job", "publish")["spec"]["template"]["spec"]
    assert job["volumes"][0]["persistentVolumeClaim"]["claimName"] == "offline-job-output"
