"""A CoLLM model served in-process: `binllm publish` stores each user's and item's CF embedding beside its code,
the service (real uvicorn, backend=local, directory store) writes them into the prompts as soft tokens, and
`/predict` answers what `binllm llm eval`'s scorer gives for the same prompts; a cold item gets the learned
unknown embedding and is listed in `cold`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from app.schemas import PredictResponse
from model_store.codes.codebook import load_codes, write_codes
from model_store.codes.features import CollabFeatures
from model_store.codes.model import BinMF, BinMFConfig
from model_store.codes.train import build_codebook
from model_store.contract.prompts import CandidateItem, PromptStyle, UserContext, fill_unknown, render_prompt
from model_store.contract.snapshot import UserEntry
from model_store.data.io import rows_to_table, write_split
from model_store.llm.export import write_servable
from model_store.llm.models import load_causal_lm
from model_store.llm.scorer import PromptScorer
from model_store.llm.soft_tokens import Projector
from tests.integration.service_process import running_service

pytestmark = [pytest.mark.integration]

STYLE = PromptStyle(layout="serving", code_mode="hex", encoding="embeddings", unknown_codes="learned")
N_USERS, N_ITEMS = 4, 6  # items 0..5 known to the codes; item 6 is cold


@pytest.fixture(scope="module")
def collm_setup(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("collm")
    torch.manual_seed(0)
    encoder = BinMF(BinMFConfig(n_users=1 + N_USERS, n_items=1 + N_ITEMS, dim=8, bits=16))
    codes = root / "codes"
    encoder.save(codes)
    write_codes(build_codebook(encoder, np.arange(N_USERS), np.arange(N_ITEMS)), codes)
    rows = [
        {"uid": u, "iid": i, "label": (u + i) % 2, "timestamp": 10 * u + i, "his": [], "his_title": [],
         "title": f"Film {i} ({1990 + i})", "flag": -1, "not_cold": 1}
        for u in range(N_USERS) for i in range(N_ITEMS + 1)
    ]  # fmt: skip
    split = write_split(rows_to_table(rows), root / "train.parquet")
    model, tokenizer = load_causal_lm(tiny_llama_dir, dtype=torch.float32, device="cpu")
    torch.manual_seed(1)
    model_dir = root / "model"
    write_servable(
        model, tokenizer, model_dir, prompt_style=STYLE.model_copy(update={"bits": 16}), with_codes=True,
        code_version=load_codes(codes).version, metrics={}, base_model=str(tiny_llama_dir),
        projector=Projector(16, int(model.config.hidden_size)),
    )  # fmt: skip
    snapshot = root / "snapshot"
    binllm = str(Path(sys.executable).parent / "binllm")
    publish = [binllm, "publish", "--codes", str(codes), "--model", str(model_dir)]
    publish += ["--split", str(split), "--out-dir", str(snapshot)]
    result = subprocess.run(publish, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"codes": codes, "model": model_dir, "snapshot": snapshot}


def test_the_snapshot_holds_each_entrys_embedding_and_the_unknown_ones(collm_setup: dict[str, Path]) -> None:
    active = (collm_setup["snapshot"] / "ACTIVE").read_text().strip()
    folder = collm_setup["snapshot"] / active
    features = CollabFeatures.from_codes_dir(collm_setup["codes"])
    first = UserEntry.model_validate_json(
        (folder / "users.jsonl").read_text().splitlines()[0].replace('"id":"0",', "")
    )
    assert first.embedding == features.user_embedding(0)
    manifest = (folder / "manifest.json").read_text()
    assert features.unknown_item_embedding in manifest and '"width":16' in manifest.replace(" ", "")


def test_predict_scores_the_soft_token_prompts_as_the_offline_scorer_does(
    collm_setup: dict[str, Path],
) -> None:
    env = {
        "BINLLM_BACKEND": "local",
        "BINLLM_STORE": "directory",
        "BINLLM_SNAPSHOT_DIR": str(collm_setup["snapshot"]),
        "BINLLM_LOCAL__MODEL_DIR": str(collm_setup["model"]),
        "BINLLM_LOCAL__DTYPE": "float32",
    }
    body = {"user_id": "1", "item_ids": ["2", "5", "6"], "history_item_ids": ["0", "3"]}
    with running_service("redis://unused", start_timeout_s=300, **env) as url:
        deadline = time.monotonic() + 300  # the model loads and warms up in the background
        while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "not ready in 300 s"
            time.sleep(0.5)
        answer = httpx.post(f"{url}/predict", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    served = PredictResponse.model_validate_json(answer.content)
    assert served.degraded is None and served.cold == ["6"]
    features = CollabFeatures.from_codes_dir(collm_setup["codes"])
    book = load_codes(collm_setup["codes"])
    user = UserContext(
        history_titles=("Film 0 (1990)", "Film 3 (1993)"),
        code=book.user_code(1),
        embedding=features.user_embedding(1),
    )
    style = STYLE.model_copy(update={"bits": 16})
    prompts = []
    for iid in (2, 5, 6):
        item = CandidateItem(
            title=f"Film {iid} ({1990 + iid})",
            code=fill_unknown(book.item_code(iid), book.unknown_item_code, style),
            embedding=fill_unknown(features.item_embedding(iid), features.unknown_item_embedding, style),
        )
        prompts.append(render_prompt(user, item, style))
    assert all(prompt.count("<|emb:") == 2 for prompt in prompts)
    expected = PromptScorer.from_dir(collm_setup["model"], dtype="float32").score_prompts(prompts)
    np.testing.assert_allclose([s.p_yes for s in served.scores], expected, rtol=0, atol=1e-4)
    assert len({round(s.p_yes or 0, 6) for s in served.scores}) == 3  # the embeddings make them differ
