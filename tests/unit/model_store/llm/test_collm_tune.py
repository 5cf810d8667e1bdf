"""CoLLM tuning (`--encoding embeddings`): stage 2 trains the projector that turns each side's CF embedding into
one soft token. The rule (odd item ids click) is in the item embedding's first value only, so the tuned model
can only rank valid rows if the soft token carries it into the LLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model_store.codes.features import CollabFeatures
from model_store.data.io import read_split
from model_store.errors import BinllmJobError
from model_store.llm.dataset import build_prompts
from model_store.llm.evaluate import evaluate_split
from model_store.llm.export import export_merged
from model_store.llm.models import load_causal_lm
from model_store.llm.scorer import PromptScorer
from model_store.llm.soft_tokens import PROJECTOR_PATH, Projector
from model_store.llm.tune import tune
from tests.unit.model_store.llm.test_tune import RuleCodes, _adapter_weights, _config, _splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STYLE = {"layout": "serving", "code_mode": "hex", "encoding": "embeddings"}


def rule_features(item_ids: list[int], width: int = 8) -> CollabFeatures:
    """Users 0..4 and `item_ids`; an item's first value is +1 for odd ids, -1 for even, the rest noise."""
    rng = np.random.default_rng(0)
    items = sorted(set(item_ids))
    users = rng.normal(0, 0.3, (1 + 5, width)).astype(np.float32)
    item_rows = rng.normal(0, 0.3, (1 + len(items), width)).astype(np.float32)
    item_rows[1:, 0] = [1.0 if iid % 2 else -1.0 for iid in items]
    item_rows[0, 0] = 0.0
    return CollabFeatures(np.arange(5), np.asarray(items, dtype=np.int64), users, item_rows)


def _features() -> CollabFeatures:
    return rule_features([*range(96), *range(10_000, 10_032)])


def _collm_config(tiny_llama_dir, tmp_path, **overrides: object):
    train, valid = _splits(tmp_path, title_rule=False, n_train=96)
    values: dict[str, object] = {
        "stages": (2,), "codes": "x", "epochs": 3, "lr": 1e-2, "lora_dropout": 0.0, "precision": "fp32",
        "prompt_style": STYLE, **overrides,
    }  # fmt: skip
    return _config(tiny_llama_dir, train, valid, tmp_path / "out", **values)


def test_the_projector_alone_learns_what_the_item_embedding_says(tiny_llama_dir, tmp_path):
    config = _collm_config(tiny_llama_dir, tmp_path)
    card = tune(config, codes=RuleCodes(), features=_features())
    adapter = tmp_path / "out" / "adapter"
    assert card.prompt_style.encoding == "embeddings"
    assert (adapter / PROJECTOR_PATH).is_file()
    lora_b = [w for name, w in _adapter_weights(adapter).items() if "lora_B" in name]
    assert lora_b and all(float(w.abs().max()) == 0.0 for w in lora_b)  # the LoRA stayed frozen (B = 0)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    evals = metrics["stages"]["stage2"]["evals"]
    assert evals[-1]["auc"] > 0.9, evals  # valid items were never seen in training: the embedding told it
    projector = Projector.from_dir(adapter)
    assert projector.d_in == 8 and projector.d_model == 64


def test_training_the_lora_with_the_projector_moves_the_lora(tiny_llama_dir, tmp_path):
    config = _collm_config(tiny_llama_dir, tmp_path, train_lora_with_projector=True, epochs=1)
    tune(config, codes=RuleCodes(), features=_features())
    lora_b = [w for name, w in _adapter_weights(tmp_path / "out" / "adapter").items() if "lora_B" in name]
    assert any(float(w.abs().max()) > 0.0 for w in lora_b)


def test_a_resumed_run_restores_the_projector_it_checkpointed(tiny_llama_dir, tmp_path):
    config = _collm_config(tiny_llama_dir, tmp_path, epochs=1)
    tune(config, codes=RuleCodes(), features=_features())
    first = Projector.from_dir(tmp_path / "out" / "adapter")
    tune(config.model_copy(update={"resume": True}), codes=RuleCodes(), features=_features())
    again = Projector.from_dir(tmp_path / "out" / "adapter")
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_run_initialised_from_a_collm_adapter_continues_its_projector(tiny_llama_dir, tmp_path):
    tune(_collm_config(tiny_llama_dir, tmp_path, epochs=1), codes=RuleCodes(), features=_features())
    first = Projector.from_dir(tmp_path / "out" / "adapter")
    config = _collm_config(tiny_llama_dir, tmp_path, epochs=1, lr=1e-9, seed=7)
    config = config.model_copy(
        update={"init_adapter": str(tmp_path / "out" / "adapter"), "out_dir": str(tmp_path / "more")}
    )
    tune(config, codes=RuleCodes(), features=_features())
    again = Projector.from_dir(tmp_path / "more" / "adapter")
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # the trained projector, not a fresh seeded one


def test_the_exported_model_scores_the_split_as_its_best_validation_did(tiny_llama_dir, tmp_path):
    config = _collm_config(tiny_llama_dir, tmp_path)
    tune(config, codes=RuleCodes(), features=_features())
    merged = tmp_path / "merged"
    with pytest.raises(BinllmJobError, match="codes directory"):
        export_merged(tmp_path / "out" / "adapter", merged, base_dir=tiny_llama_dir)
    manifest = export_merged(
        tmp_path / "out" / "adapter", merged, base_dir=tiny_llama_dir, features=_features()
    )
    assert manifest.prompt_style.encoding == "embeddings" and (merged / PROJECTOR_PATH).is_file()
    metrics = evaluate_split(
        merged, config.valid, codes=RuleCodes(), features=_features(), dtype="float32", progress=False
    )
    best = json.loads((tmp_path / "out" / "metrics.json").read_text())["stages"]["stage2"]["best_auc"]
    assert metrics["auc"] == pytest.approx(best, abs=1e-3) and metrics["auc"] > 0.9
    with pytest.raises(ValueError, match="CF embeddings"):
        evaluate_split(merged, config.valid, codes=RuleCodes(), dtype="float32", progress=False)


def test_the_vocabulary_tokens_score_as_the_in_process_soft_tokens(tiny_llama_dir, tmp_path):
    """vLLM's path: the tokenizer maps each marker to its added token, whose row is the projected embedding."""
    config = _collm_config(tiny_llama_dir, tmp_path, epochs=1)
    tune(config, codes=RuleCodes(), features=_features())
    merged = tmp_path / "merged"
    manifest = export_merged(
        tmp_path / "out" / "adapter", merged, base_dir=tiny_llama_dir, features=_features()
    )
    assert manifest.embedding_tokens == 2 + 5 + 128  # unknown user and item, 5 users, 128 items
    data = build_prompts(
        read_split(config.valid), codes=RuleCodes(), style=manifest.prompt_style, features=_features()
    )
    in_process = PromptScorer.from_dir(merged, dtype="float32")  # markers -> projector, at run time
    expected = in_process.score_prompts(data.prompts[:6])
    model, tokenizer = load_causal_lm(merged, dtype=torch.float32, device="cpu")  # as vLLM loads it
    plain = PromptScorer(model, tokenizer)
    ids = [list(row) for row in tokenizer(data.prompts[:6])["input_ids"]]
    assert all(min(row) >= 0 for row in ids) and all(max(row) >= 49152 for row in ids)  # added tokens
    with torch.no_grad():
        vocab = torch.sigmoid(plain._last_token_margins(ids)).tolist()
    np.testing.assert_allclose(vocab, expected, rtol=0, atol=1e-4)
