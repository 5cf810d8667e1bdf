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


@pytest.mark.parametrize("body", [b"{not json", b'{"user_id": 5}', b"\xff\xfe"])
def test_the_key_is_checked_before_the_body_is_parsed(client: TestClient, body: bytes) -> None:
    """A request without a key learns nothing about the body's shape: 401, never a 400/422 about the body."""
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert (
        response.status_code == 401
        and ErrorResponse.model_validate(response.json()).error.type == "unauthorized"
    )
    authorized = {"content-type": "application/json", "Authorization": "Bearer k-one"}
    assert client.post("/predict", content=body, headers=authorized).status_code in (400, 422)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_interactive_docs_are_off_when_keys_are_set(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert (
        response.status_code == 404
        and ErrorResponse.model_validate(response.json()).error.type == "not_found"
    )


def test_interactive_docs_are_served_without_keys(snapshot_dir: Path, scorer: Any) -> None:
    settings = ServiceSettings(backend="instant", store="directory", snapshot_dir=snapshot_dir)
    with TestClient(create_app(settings, scorer=scorer)) as open_client:
        assert [open_client.get(p).status_code for p in ("/docs", "/redoc")] == [200, 200]
        assert "securitySchemes" not in open_client.get("/openapi.json").json().get("components", {})


def test_openapi_declares_the_bearer_scheme_on_predict_when_keys_are_set(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    predict = document["paths"]["/predict"]["post"]
    assert predict["security"] == [{"bearer": []}] and "401" in predict["responses"]
    assert "security" not in document["paths"]["/healthz"]["get"]
