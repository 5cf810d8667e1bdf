"""A warm start: the service started as `make serve` starts it says ready only once the model answers, so the
README's /predict example, sent the moment /readyz first says ready, is scored by the LLM (never code-only),
and the log carries the one ready line (URL, backend, engine, model)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.schemas import PredictResponse, ReadyResponse
from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_SNAPSHOT = ROOT / "artifacts/demo/snapshot"
README_PREDICT = re.compile(
    r"curl -s localhost:8000/predict -H 'content-type: application/json' \\\n\s+-d '(\{.*?\})'"
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def readme_predict_body() -> dict[str, object]:
    """The body of the README's first /predict example."""
    match = README_PREDICT.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README has no /predict example in the expected shape"
    body: dict[str, object] = json.loads(match.group(1))
    return body


def test_after_the_first_ready_the_readme_example_is_scored_by_the_llm(tmp_path: Path) -> None:
    if not (DEMO_SNAPSHOT / "ACTIVE").is_file():
        pytest.skip("no demo artifacts: run `make demo`")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINLLM_")}
    env |= {
        "BINLLM_SERVER__HOST": "127.0.0.1",
        "BINLLM_SERVER__PORT": str(port),
    }  # as `make serve`, port aside
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.server"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        ready, seen_warming = None, False
        deadline = time.monotonic() + 600
        while ready is None:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready in 600 s"
            try:
                answer = httpx.get(f"{url}/readyz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if answer.status_code == 503:
                seen_warming |= "warming up" in answer.text
            else:
                ready_answer = ReadyResponse.model_validate_json(answer.content)
                assert ready_answer.status == "ready", f"the first 200 from /readyz was {answer.text}"
                ready = ready_answer
            time.sleep(0.1)
        predicted = httpx.post(f"{url}/predict", json=readme_predict_body(), timeout=120)
        assert predicted.status_code == 200, predicted.text
        body = PredictResponse.model_validate_json(predicted.content)
        assert body.degraded is None and body.score_kind in ("p_yes", "blend")
        assert all(score.score_kind == body.score_kind and score.p_yes is not None for score in body.scores)
        assert seen_warming  # /readyz said "warming up" (503) before, not degraded
        assert ready.backend == "local" and ready.engine in ("torch-bfloat16", "torch-float32")
        lines = [line for line in log_path.read_text().splitlines() if "binllm ready:" in line]
        assert len(lines) == 1 and f"engine={ready.engine}" in lines[0] and "backend=local" in lines[0]
        assert f"http://127.0.0.1:{port}" in lines[0] and "model=" in lines[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
