"""The shipped CoLLM model one setting away: `make demo ENCODING=embeddings` (what `make serve
ENCODING=embeddings` builds before it serves: `binllm demo build --encoding embeddings`) exports the shipped
CoLLM adapter with its projector and the codes' embeddings as vocabulary tokens, publishes the ML-1M users and
items with their CF embeddings, and the service started on it answers with the LLM, each prompt carrying soft
tokens."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from app.schemas import PredictResponse
from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.demo import ML1M_DATA, ML1M_SPLITS, SHIPPED_ADAPTERS, SHIPPED_ML1M
from model_store.llm.soft_tokens import PROJECTOR_PATH
from tests.integration.service_process import running_service, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BODY = {"user_id": "2", "item_ids": ["1", "3", "22", "40"]}  # the README example, one more item


def test_the_collm_demo_builds_and_serves_soft_token_scores(tmp_path: Path) -> None:
    data = REPO / ML1M_DATA
    if not all((data / name).is_file() for name in ML1M_SPLITS):
        pytest.skip(f"the ML-1M splits are not at {data}")
    assert (SHIPPED_ML1M / SHIPPED_ADAPTERS["embeddings"] / PROJECTOR_PATH).is_file()
    out = tmp_path / "demo"
    build = ["make", "-s", "demo", "ENCODING=embeddings", f"DEMO_DIR={out}"]  # `make serve`'s build step
    result = subprocess.run(build, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "encoding: embeddings" in result.stdout
    manifest = ModelManifest.model_validate_json((out / "model" / MANIFEST_FILENAME).read_bytes())
    assert manifest.prompt_style.encoding == "embeddings" and manifest.embedding_tokens > 3000
    assert (out / "model" / PROJECTOR_PATH).is_file()
    env = {
        "BINLLM_BACKEND": "local",
        "BINLLM_STORE": "directory",
        "BINLLM_SNAPSHOT_DIR": str(out / "snapshot"),
        "BINLLM_LOCAL__MODEL_DIR": str(out / "model"),
    }
    with running_service("redis://unused", start_timeout_s=300, **env) as url:
        wait_ready(url, timeout_s=600)
        answer = httpx.post(f"{url}/predict", json=BODY, timeout=300)
    assert answer.status_code == 200, answer.text
    served = PredictResponse.model_validate_json(answer.content)
    assert served.degraded is None, json.dumps(answer.json())[:2000]
    assert [s.score_kind for s in served.scores] == ["p_yes"] * 4
    assert len({round(s.p_yes or 0, 5) for s in served.scores}) > 1
