"""Optional bearer-token authentication (BINLLM_API_KEYS): /predict needs a key, health and metrics stay open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.main import create_app
from app.schemas import ErrorResponse, PredictResponse
from app.settings import ServiceSettings

BODY = {"user_id": "u1", "item_ids": ["i1"]}


@pytest.fixture
def client(snapshot_dir: Path, scorer: Any) -> Iterator[TestClient]:
    settings = ServiceSettings(
        backend="instant", store="directory", snapshot_dir=snapshot_dir, api_keys=SecretStr("k-one, k-two")
    )
    with TestClient(create_app(settings, scorer=scorer)) as test_client:
        yield test_client


@pytest.mark.parametrize("header", [None, "Bearer wrong", "k-one", "Basic k-one", "Bearer "])
def test_predict_without_a_valid_bearer_key_gets_401(client: TestClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = client.post("/predict", json=BODY, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert ErrorResponse.model_validate(response.json()).error.type == "unauthorized"


@pytest.mark.parametrize("key", ["k-one", "k-two"])
def test_predict_with_any_configured_key_answers(client: TestClient, key: str) -> None:
    response = client.post("/predict", json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and PredictResponse.model_validate(response.json()).scores


def test_health_and_metrics_stay_open(client: TestClient) -> None:
    assert [client.get(path).status_code for path in ("/healthz", "/readyz", "/metrics")] == [200, 200, 200]


def test_without_keys_no_authentication_is_asked(snapshot_dir: Path, scorer: Any) -> None:
    settings = ServiceSettings(backend="instant", store="directory", snapshot_dir=snapshot_dir)
    with TestClient(create_app(settings, scorer=scorer)) as open_client:
        assert open_client.post("/predict", json=BODY).status_code == 200
