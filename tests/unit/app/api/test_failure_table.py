"""The README's "What a client sees when something fails" table, read row by row and checked against the app.

Rows about the request itself (its body, its content type, its size, its credentials) are made to happen here,
over in-process HTTP against `create_app`, and the status and error type the row's "client sees" cell names
must be what comes back, for every example of that row. Rows about dependencies (vLLM, Redis, snapshots) are
made to happen by the tests their last cell names. A request row this file has no examples for fails
`test_every_request_row_has_examples`, so the table cannot grow a claim nobody checks.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.main import create_app
from app.schemas import ErrorResponse
from app.settings import DEFAULT_MAX_BODY_BYTES, ServiceSettings

README = Path(__file__).resolve().parents[4] / "README.md"
HEADING = "### What a client sees when something fails"
JSON = {"content-type": "application/json"}
GOOD = b'{"user_id": "u1", "item_ids": ["i1"]}'

# Row (the start of its first cell) -> requests that make it happen: (body, headers, settings overrides).
EXAMPLES: dict[str, list[tuple[bytes, dict[str, str], dict[str, Any]]]] = {
    "body over `BINLLM_MAX_BODY_BYTES`": [(b"{" + b" " * DEFAULT_MAX_BODY_BYTES + b"}", JSON, {})],
    "body not JSON": [
        (b"hello", JSON, {}),
        (b'{"user_id": "u1", "item_ids": [', JSON, {}),  # truncated
        (b"", JSON, {}),
        (b'["u1", "i1"]', JSON, {}),  # JSON, not an object
    ],
    "body that cannot be decoded": [
        (b'{"user_id": "\xff\xfe", "item_ids": ["i1"]}', JSON, {}),
        (gzip.compress(GOOD), {**JSON, "content-encoding": "gzip"}, {}),
        (b"[" * 2000 + b"]" * 2000, JSON, {}),
    ],
    "body without `content-type: application/json`": [
        (GOOD, {"content-type": "text/plain"}, {}),
        (GOOD, {}, {}),
    ],
    "`BINLLM_API_KEYS` set": [
        (GOOD, JSON, {"api_keys": SecretStr("k-one")}),
        (GOOD, {**JSON, "authorization": "Bearer wrong"}, {"api_keys": SecretStr("k-one")}),
        (b"{not json", JSON, {"api_keys": SecretStr("k-one")}),  # the key first: 401, not 422
    ],
}


def failure_table() -> list[list[str]]:
    """The table's rows as cells, header and rule left out."""
    text = README.read_text(encoding="utf-8").split(HEADING, 1)[1]
    rows = []
    for line in text.splitlines():
        if rows and not line.startswith("|"):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[2:]


def request_rows() -> list[list[str]]:
    return [row for row in failure_table() if row[0].startswith(("body", "`BINLLM_API_KEYS`"))]


def examples_of(row: list[str]) -> list[tuple[bytes, dict[str, str], dict[str, Any]]]:
    return next((cases for start, cases in EXAMPLES.items() if row[0].startswith(start)), [])


@pytest.fixture
def post(snapshot_dir: Path, scorer: Any) -> Iterator[Any]:
    """POST /predict to an app built with the test snapshot and the given settings overrides."""
    clients: list[TestClient] = []

    def send(body: bytes, headers: dict[str, str], overrides: dict[str, Any]) -> Any:
        settings = ServiceSettings(
            backend="instant", store="directory", snapshot_dir=snapshot_dir, fallback=False, **overrides
        )
        client = TestClient(create_app(settings, scorer=scorer), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client.post("/predict", content=body, headers=headers)

    yield send
    for client in clients:
        client.__exit__(None, None, None)


def test_the_table_has_the_request_rows() -> None:
    starts = [row[0] for row in request_rows()]
    assert len(starts) == len(EXAMPLES), starts


def test_every_request_row_has_examples() -> None:
    assert [row[0] for row in request_rows() if not examples_of(row)] == []


@pytest.mark.parametrize("row", request_rows(), ids=lambda row: row[0][:40])
def test_each_request_row_is_what_the_app_answers(row: list[str], post: Any) -> None:
    named = re.match(r"(\d{3}) `(\w+)`", row[1])
    assert named is not None, f"the cell {row[1]!r} should start with a status and an error type"
    status, type_ = named.groups()
    for body, headers, overrides in examples_of(row):
        response = post(body, headers, overrides)
        error = ErrorResponse.model_validate(response.json()).error
        assert (response.status_code, error.type) == (int(status), type_), (body[:40], headers, response.text)
        if '`param: "body"`' in row[1]:
            assert error.param == "body"
