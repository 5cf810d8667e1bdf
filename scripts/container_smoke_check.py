"""The HTTP checks of scripts/container_smoke.sh, through the compose stack's published ports.

    .venv/bin/python scripts/container_smoke_check.py --api-cpu http://127.0.0.1:18001 \\
        --api http://127.0.0.1:18000 --snapshot artifacts/demo/snapshot

`api-cpu` (job image, in-process model, Redis store) must become ready and answer POST /predict for a user and
three items of the snapshot that the publish job wrote into the containerised Redis (the ids are read from the
directory snapshot `make demo` published from the same inputs). `api` (API image, backend=vllm; no vLLM runs
here) must serve /healthz and /metrics and, with its Redis and the active snapshot fine, either answer /predict
from the code-only fallback (degraded) or be not ready for the vLLM backend alone (503 + Retry-After). One JSON
line per check; exit 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

from app.schemas import ErrorResponse, PredictResponse, ReadyResponse


def pick_ids(snapshot: Path) -> tuple[str, list[str]]:
    """The first user and the first three items with a code in the active directory snapshot."""
    version = (snapshot / "ACTIVE").read_text().strip()
    with (snapshot / version / "users.jsonl").open() as users:
        user = json.loads(next(users))["id"]
    items = []
    with (snapshot / version / "items.jsonl").open() as lines:
        for line in lines:
            item = json.loads(line)
            if item.get("code") is not None:
                items.append(str(item["id"]))
            if len(items) == 3:
                break
    return str(user), items


def report(check: str, **fields: object) -> None:
    print(json.dumps({"check": check, **fields}), flush=True)


def wait_for(client: httpx.Client, url: str, deadline_s: float, *, ready: bool = False) -> httpx.Response:
    """Poll `url` until 200 (and, with `ready`, a /readyz status of 'ready', not 'degraded': the in-process
    model loads after the server is up, and until then the code-only fallback answers)."""
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < deadline_s:
        try:
            response = client.get(url)
            last = response.text
            if response.status_code == 200 and (
                not ready or ReadyResponse.model_validate_json(response.content).status == "ready"
            ):
                return response
        except httpx.TransportError as exc:  # the port is published before the server listens
            last = repr(exc)
        time.sleep(0.5)
    raise SystemExit(f"{url}: no answer within {deadline_s:.0f} s: {last}")


def check_api_cpu(client: httpx.Client, base: str, user: str, items: list[str], deadline_s: float) -> None:
    """The CPU profile: ready with the model loaded, a first /predict scored by that model (P(Yes), not the
    code-only fallback), metrics that counted it."""
    start = time.monotonic()
    ready = ReadyResponse.model_validate_json(
        wait_for(client, f"{base}/readyz", deadline_s, ready=True).content
    )
    report("api-cpu /readyz", http=200, seconds=round(time.monotonic() - start, 1), **ready.model_dump())
    start = time.monotonic()
    response = client.post(f"{base}/predict", json={"user_id": user, "item_ids": items})
    assert response.status_code == 200, response.text
    predicted = PredictResponse.model_validate_json(response.content)
    assert [s.item_id for s in predicted.scores] == items
    assert predicted.score_kind != "codes" and all(s.p_yes is not None for s in predicted.scores), (
        response.text
    )
    scores = {s.item_id: round(s.score, 4) for s in predicted.scores}
    seconds = round(time.monotonic() - start, 2)
    report(
        "api-cpu first /predict", http=200, seconds=seconds, score_kind=predicted.score_kind, scores=scores
    )
    metrics = client.get(f"{base}/metrics")
    assert metrics.status_code == 200 and "binllm_request_duration_seconds_count" in metrics.text
    report("api-cpu /metrics", http=200, bytes=len(metrics.content))


def check_api(client: httpx.Client, base: str, user: str, items: list[str], deadline_s: float) -> None:
    """The API image without its vLLM: alive and serving metrics; /readyz and /predict either degraded to the
    code-only fallback (200, score_kind 'codes') or not ready for the backend alone (503 + Retry-After)."""
    wait_for(client, f"{base}/healthz", deadline_s)
    ready = client.get(f"{base}/readyz")
    response = client.post(f"{base}/predict", json={"user_id": user, "item_ids": items})
    if ready.status_code == 200:
        state = ReadyResponse.model_validate_json(ready.content)
        assert state.status == "degraded", ready.text
        report("api /readyz", http=200, **state.model_dump())
        assert response.status_code == 200, response.text
        predicted = PredictResponse.model_validate_json(response.content)
        assert [s.item_id for s in predicted.scores] == items and predicted.score_kind == "codes"
        scores = {s.item_id: round(s.score, 4) for s in predicted.scores}
        report("api /predict", http=200, score_kind=predicted.score_kind, scores=scores)
    else:
        message = ErrorResponse.model_validate_json(ready.content).error.message
        assert ready.status_code == 503 and message == "not ready: backend 'vllm' not ready", message
        report("api /readyz", http=503, message=message)
        error = ErrorResponse.model_validate_json(response.content).error
        assert response.status_code == 503 and error.type == "backend_unavailable", response.text
        assert "retry-after" in response.headers
        report("api /predict", http=503, type=error.type, retry_after=response.headers["retry-after"])
    metrics = client.get(f"{base}/metrics")
    assert metrics.status_code == 200 and "binllm_request_duration_seconds" in metrics.text
    report("api /metrics", http=200, bytes=len(metrics.content))


def main() -> None:
    """Parse the URLs, run both checks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-cpu", required=True, help="base URL of the api-cpu service")
    parser.add_argument("--api", required=True, help="base URL of the api service")
    parser.add_argument("--snapshot", type=Path, default=Path("artifacts/demo/snapshot"))
    parser.add_argument("--ready-deadline-s", type=float, default=240.0)
    args = parser.parse_args()
    user, items = pick_ids(args.snapshot)
    with httpx.Client(timeout=120.0) as client:
        check_api_cpu(client, args.api_cpu.rstrip("/"), user, items, args.ready_deadline_s)
        check_api(client, args.api.rstrip("/"), user, items, args.ready_deadline_s)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as exc:
        print(f"container smoke check failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
