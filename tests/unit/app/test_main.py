"""The app over HTTP (in-process ASGI, no sockets): routes, error envelope, readiness, metrics, imports."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.errors import BackendUnavailableError
from app.main import create_app
from app.schemas import ErrorResponse, PredictResponse, ReadyResponse
from app.settings import ServiceSettings, VllmSettings


def settings_for(root: Path, **extra: Any) -> ServiceSettings:
    return ServiceSettings(backend="instant", store="directory", snapshot_dir=root, **extra)


@pytest.fixture
def client(snapshot_dir: Path, scorer: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(snapshot_dir, max_candidates=3), scorer=scorer)) as test_client:
        yield test_client


def error_of(response: Any) -> Any:
    return ErrorResponse.model_validate(response.json()).error


def test_predict_returns_scores_in_request_order(client: TestClient) -> None:
    response = client.post("/predict", json={"user_id": "u1", "item_ids": ["i3", "i1"]})
    assert response.status_code == 200
    body = PredictResponse.model_validate(response.json())
    assert [s.item_id for s in body.scores] == ["i3", "i1"] and body.cold == ["i3"]
    assert body.score_kind == "p_yes" and all(s.score == s.p_yes for s in body.scores)


def test_predict_unknown_item_returns_404_naming_it(client: TestClient) -> None:
    response = client.post("/predict", json={"user_id": "u1", "item_ids": ["i1", "missing-7"]})
    assert response.status_code == 404
    error = error_of(response)
    assert error.type == "unknown_items" and error.param == "item_ids" and "missing-7" in error.message


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"user_id": "u1"}, "item_ids", "Field required"),
        ({"user_id": "u1", "item_ids": []}, "item_ids", "at least 1"),
        ({"user_id": "u1", "item_ids": "i1"}, "item_ids", "valid list"),
        ({"user_id": "u1", "item_ids": ["i1", 7]}, "item_ids[1]", "valid string"),
        ({"user_id": "", "item_ids": ["i1"]}, "user_id", "at least 1"),
        ({"user_id": "u1", "item_ids": ["i1"], "items": ["i2"]}, "items", "unknown field"),
        ({"user_id": "u1", "item_ids": ["i1", "i2", "i3", "h1"]}, "item_ids", "at most 3"),
    ],
)
def test_malformed_body_returns_422_naming_the_field(
    client: TestClient, body: dict[str, Any], param: str, words: str
) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error.param == param and words in error.message and param in error.message


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "expected a JSON object"), (b"", "got nothing")],
)
def test_body_that_is_not_a_json_object_returns_422(client: TestClient, content: bytes, words: str) -> None:
    response = client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = error_of(response)
    assert error.param == "body" and words in error.message


def test_unknown_path_uses_the_error_envelope(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404 and error_of(response).type == "not_found"


def test_backend_unavailable_returns_503_with_retry_after(client: TestClient, scorer: Any) -> None:
    scorer.fail_with = BackendUnavailableError("vllm: connection refused")
    response = client.post("/predict", json={"user_id": "u1", "item_ids": ["i1"]})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert error_of(response).type == "backend_unavailable"


def test_unexpected_exception_returns_generic_500_without_details(snapshot_dir: Path, scorer: Any) -> None:
    scorer.fail_with = RuntimeError("secret internals")
    app = create_app(settings_for(snapshot_dir), scorer=scorer)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.post("/predict", json={"user_id": "u1", "item_ids": ["i1"]})
    assert response.status_code == 500
    error = error_of(response)
    assert error.type == "internal_error" and "secret" not in error.message


def test_healthz_and_readyz_answer_when_ready(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ReadyResponse.model_validate(ready.json()).snapshot_version == "v1"


def test_readyz_is_503_with_reasons_when_backend_not_ready(client: TestClient, scorer: Any) -> None:
    scorer.is_ready = False
    response = client.get("/readyz")
    assert response.status_code == 503 and "backend 'recording' not ready" in error_of(response).message


def test_without_a_snapshot_readyz_and_predict_are_503(tmp_path: Path, scorer: Any) -> None:
    with TestClient(create_app(settings_for(tmp_path / "empty"), scorer=scorer)) as empty:
        ready = empty.get("/readyz")
        assert ready.status_code == 503 and "no active snapshot" in error_of(ready).message
        predict = empty.post("/predict", json={"user_id": "u1", "item_ids": ["i1"]})
        assert predict.status_code == 503 and error_of(predict).type == "snapshot_missing"


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    client.post("/predict", json={"user_id": "u1", "item_ids": ["i1"]})
    client.post("/predict", json={"user_id": "u1", "item_ids": ["bad"]})
    text = client.get("/metrics").text
    assert 'binllm_request_duration_seconds_count{method="POST",route="/predict",status="200"}' in text
    assert 'binllm_request_duration_seconds_count{method="POST",route="/predict",status="404"}' in text
    assert 'binllm_errors_total{type="unknown_items"}' in text
    assert "binllm_candidates_per_request_bucket" in text


def test_app_main_imports_and_starts_with_torch_and_transformers_blocked(
    monkeypatch: pytest.MonkeyPatch, snapshot_dir: Path
) -> None:
    for name in list(sys.modules):
        if (name == "app" or name.startswith("app.")) and name != "app.metrics":  # metrics register once
            monkeypatch.delitem(sys.modules, name)
    for blocked in ("torch", "transformers"):
        monkeypatch.setitem(sys.modules, blocked, None)  # `import torch` now raises ImportError
    main = importlib.import_module("app.main")
    settings = ServiceSettings(
        backend="vllm",
        vllm=VllmSettings(base_url="http://127.0.0.1:9"),
        store="directory",
        snapshot_dir=snapshot_dir,
    )
    with TestClient(main.create_app(settings)) as test_client:
        assert test_client.get("/healthz").status_code == 200
    assert sys.modules["torch"] is None
