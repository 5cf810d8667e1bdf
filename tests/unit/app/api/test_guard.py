"""Bounded input and no leaks, over in-process HTTP: body limit (413), request ids, bounded echoes and metric
labels, secrets kept out of responses and logs."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.errors import BackendResponseError, BackendUnavailableError, redact
from app.main import create_app
from app.schemas import ErrorResponse
from app.settings import ServiceSettings

PASSWORD = "S3cretPw"


@pytest.fixture
def client(snapshot_dir: Path, scorer: Any) -> Iterator[TestClient]:
    settings = ServiceSettings(
        backend="instant", store="directory", snapshot_dir=snapshot_dir, max_body_bytes=4096, fallback=False
    )
    with TestClient(create_app(settings, scorer=scorer), raise_server_exceptions=False) as test_client:
        yield test_client


def error_of(response: Any) -> Any:
    return ErrorResponse.model_validate(response.json()).error


def test_a_body_over_the_limit_is_refused_with_413(client: TestClient) -> None:
    big = b'{"user_id": "u1", "item_ids": ["' + b"x" * 10_000 + b'"]}'
    response = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and error_of(response).type == "payload_too_large"


def test_a_chunked_body_over_the_limit_is_refused_with_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "u1", "item_ids": ["'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_every_response_carries_a_request_id_and_a_plain_client_id_is_kept(client: TestClient) -> None:
    assert len(client.get("/healthz").headers["x-request-id"]) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
    odd = client.get("/healthz", headers={"X-Request-ID": "a" * 500}).headers["x-request-id"]
    assert odd != "a" * 500


def test_a_huge_unknown_field_name_is_not_echoed(client: TestClient) -> None:
    name = "f" * 3000
    body = '{"user_id": "u1", "item_ids": ["i1"], "' + name + '": 1}'
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and len(response.content) < 1000


def test_made_up_methods_do_not_grow_the_metrics(client: TestClient) -> None:
    before = len(client.get("/metrics").content)
    for k in range(50):
        client.request(f"BREW{k}" + "X" * 200, "/predict")
    text = client.get("/metrics").text
    assert "BREW" not in text and 'method="other"' in text
    assert len(text) - before < 5000


@pytest.mark.parametrize(
    "failure",
    [
        BackendUnavailableError(f"vLLM unreachable at http://admin:{PASSWORD}@vllm:8000: refused"),
        BackendResponseError(f"vLLM /classify answered 500: Traceback ... token={PASSWORD}"),
    ],
)
def test_5xx_show_a_summary_and_request_id_while_the_log_has_the_detail_redacted(
    client: TestClient, scorer: Any, failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    scorer.fail_with = failure
    with caplog.at_level(logging.WARNING):
        response = client.post("/predict", json={"user_id": "u1", "item_ids": ["i1"]})
    assert response.status_code in (502, 503)
    message = error_of(response).message
    assert PASSWORD not in response.text and "vllm:8000" not in message and "Traceback" not in message
    assert f"request id {response.headers['x-request-id']}" in message
    logged = caplog.text
    assert response.headers["x-request-id"] in logged and PASSWORD not in logged


def test_redact_masks_url_credentials_and_tokens() -> None:
    text = "redis://:pw1@r:6379/0 http://u:pw2@h/x Authorization: Bearer abc.def token=xyz api_key=k1"
    masked = redact(text)
    assert all(secret not in masked for secret in ("pw1", "pw2", "abc.def", "xyz", "k1"))
    assert "redis://***@r:6379/0" in masked


def test_readyz_names_reasons_without_paths(tmp_path: Path, scorer: Any) -> None:
    settings = ServiceSettings(backend="instant", store="directory", snapshot_dir=tmp_path / "nowhere")
    with TestClient(create_app(settings, scorer=scorer)) as empty:
        response = empty.get("/readyz")
    assert response.status_code == 503 and str(tmp_path) not in response.text
    assert "no active snapshot" in error_of(response).message


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"user_id": "\xff\xfe", "item_ids": ["i1"]}', {"content-type": "application/json"}),
        (
            gzip.compress(b'{"user_id": "u1", "item_ids": ["i1"]}'),
            {"content-type": "application/json", "content-encoding": "gzip"},
        ),
        (b"[" * 2000 + b"]" * 2000, {"content-type": "application/json"}),
    ],
    ids=["not-utf8", "gzip", "too-deep"],
)
def test_unparsable_bodies_get_a_documented_4xx_saying_what_to_send(
    client: TestClient, body: bytes, headers: dict[str, str]
) -> None:
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code in (400, 422)
    error = error_of(response)
    assert error.param == "body" and ("JSON" in error.message or "json" in error.message)


def test_a_body_without_a_json_content_type_gets_422_naming_the_content_type(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b'{"user_id": "u1", "item_ids": ["i1"]}', headers={"content-type": "text/plain"}
    )
    assert response.status_code == 422 and "content-type: application/json" in error_of(response).message
