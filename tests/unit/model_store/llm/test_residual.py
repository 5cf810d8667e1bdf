"""`binllm llm tune --objective residual|flip`: the LLM trained to add to its codes' own logit.

The rule (odd item ids click) is carried by the item code's top byte; the codes' own score reads it only
weakly (`RuleCodes.code_score`, scale 0.01), so the fused score can only beat the codes if the LoRA learns it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model_store.codes.codebook import CodeBook
from model_store.codes.evaluation import Interactions
from model_store.codes.out_of_fold import OutOfFoldCodes, fingerprint, write_out_of_fold
from model_store.contract.fusion import ScoreFusion, sigmoid
from model_store.data.io import read_split
from model_store.llm.answer import find_answer_tokens
from model_store.llm.dataset import PromptSet, build_prompts
from model_store.llm.fusion_head import FusionHead, residual_loss
from model_store.llm.models import load_causal_lm
from model_store.llm.trainer import StageTrainer, validation_metrics
from model_store.llm.tune import attach_lora, read_adapter_card, tune
from tests.unit.model_store.llm.test_tune import RuleCodes, _config, _splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trainer(tiny_llama_dir, tmp_path, **overrides: object) -> StageTrainer:
    train_path, valid_path = _splits(tmp_path, title_rule=False, n_train=32)
    config = _config(
        tiny_llama_dir, train_path, valid_path, tmp_path / "out", stages=(2,), codes="x", **overrides
    )
    model, tokenizer = load_causal_lm(tiny_llama_dir, dtype=torch.float32, device="cpu")
    codes = RuleCodes()
    train, valid = (
        build_prompts(read_split(path), codes=codes, style=config.prompt_style)
        for path in (train_path, valid_path)
    )
    peft_model = attach_lora(model, config)
    answer = find_answer_tokens(tokenizer)
    return StageTrainer(config, peft_model, tokenizer, answer, 2, train, valid, code_score=codes.code_score())


def test_residual_objective_starts_at_exactly_the_codes_score(tiny_llama_dir, tmp_path):
    trainer = _trainer(tiny_llama_dir, tmp_path, objective="residual")
    fused = trainer._score_valid()  # [N] logits before any step
    code_score = RuleCodes().code_score()
    expected = [code_score.logit(RuleCodes().user_code(u), RuleCodes().item_code(i)) for u, i in
                zip(trainer.valid.uids, trainer.valid.iids, strict=True)]  # fmt: skip
    np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-6)
    assert len(set(np.round(fused, 6).tolist())) > 1  # the codes' logits differ, so equality means something
    assert trainer.head is not None and trainer.head.weights.requires_grad


def test_plain_objective_and_stage_one_train_no_head(tiny_llama_dir, tmp_path):
    assert _trainer(tiny_llama_dir, tmp_path, objective="p_yes").head is None


def test_flip_adds_the_margin_only_loss_to_the_fused_loss():
    head = FusionHead(llm_weight_init=0.5)
    margins, codes = torch.tensor([2.0, -1.0]), torch.tensor([0.3, 0.1])
    warm, labels = torch.tensor([True, False]), torch.tensor([1.0, 0.0])
    residual = residual_loss(head, margins, codes, warm, labels, flip=False)
    flip = residual_loss(head, margins, codes, warm, labels, flip=True)
    margin_only = torch.nn.functional.binary_cross_entropy_with_logits(margins, labels, reduction="sum")
    torch.testing.assert_close(flip - residual, margin_only)


@pytest.mark.parametrize("objective", ["residual", "flip"])
def test_a_short_residual_tune_lowers_the_loss_beats_the_codes_and_ships_its_fusion(
    tiny_llama_dir, tmp_path, objective
):
    train, valid = _splits(tmp_path, title_rule=False, n_train=96)
    config = _config(
        tiny_llama_dir, train, valid, tmp_path / "out", stages=(2,), codes="x", objective=objective,
        epochs=3, lr=1e-2, lora_dropout=0.0, precision="fp32",
    )  # fmt: skip
    card = tune(config, codes=RuleCodes())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    losses = metrics["losses"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    best = max(metrics["stages"]["stage2"]["evals"], key=lambda e: e["auc"])
    assert best["auc"] > best["codes_auc"] + 0.1  # the LLM added what the weak code score misses
    assert card.fusion is not None and objective in card.fusion.fitted_on
    assert card.fusion.codes == RuleCodes().code_score()
    assert card.fusion.warm[0] != 0.0  # w_llm moved off its zero start
    written = read_adapter_card(tmp_path / "out" / "adapter")
    assert written is not None and written.fusion == card.fusion


def test_the_shipped_fusion_reproduces_the_fused_validation_score(tiny_llama_dir, tmp_path):
    """What the service computes from binllm.json's fusion is what tuning validated (one scale)."""
    trainer = _trainer(tiny_llama_dir, tmp_path, objective="residual", llm_weight_init=0.7)
    with torch.no_grad():
        trainer.head.weights[1].copy_(torch.tensor([0.7, 1.3, -0.2]))  # type: ignore[union-attr]
    fused = trainer._score_valid()
    fusion: ScoreFusion = trainer.head.to_fusion(RuleCodes().code_score(), "test")  # type: ignore[union-attr]
    trainer.head = None
    raw = trainer._score_valid()  # plain margins of the same rows
    codes = RuleCodes()
    served = [
        fusion.blend(sigmoid(float(m)), codes.user_code(u), codes.item_code(i), warm=True)
        for m, u, i in zip(raw, trainer.valid.uids, trainer.valid.iids, strict=True)
    ]
    np.testing.assert_allclose(served, 1 / (1 + np.exp(-fused)), rtol=1e-5, atol=1e-6)
    assert validation_metrics(fused, trainer.valid)["n"] == len(trainer.valid)


def test_train_top_layers_keeps_the_lower_lora_as_started_and_caches_it_in_the_trunk(
    tiny_llama_dir, tmp_path
):
    train, valid = _splits(tmp_path, title_rule=True, n_train=32)
    first = _config(tiny_llama_dir, train, valid, tmp_path / "first", epochs=1, lora_dropout=0.0)
    tune(first)  # a LoRA on both layers, to start from
    start = load_file(str(tmp_path / "first" / "adapter" / "adapter_model.safetensors"))
    store = tmp_path / "trunk-store"
    continued = _config(
        tiny_llama_dir, train, valid, tmp_path / "next", epochs=1, lora_dropout=0.0, precision="fp32",
        init_adapter=str(tmp_path / "first" / "adapter"), train_top_layers=1, trunk_cache_dir=str(store),
    )  # fmt: skip
    tune(continued)
    after = load_file(str(tmp_path / "next" / "adapter" / "adapter_model.safetensors"))
    lower = [name for name in start if ".layers.0." in name]
    upper = [name for name in start if ".layers.1." in name and "lora_B" in name]
    assert lower and upper
    assert all(torch.equal(after[name], start[name]) for name in lower)
    assert any(not torch.equal(after[name], start[name]) for name in upper)
    assert len(list(store.glob("trunk-*/part-*.pt"))) == 2  # train and valid, layer 0 with its frozen LoRA


def test_a_frozen_lora_draws_no_dropout_and_the_trunk_is_the_same_in_train_mode(tiny_llama_dir, tmp_path):
    from model_store.llm.grouped import make_group
    from model_store.llm.trunk import compute_trunk

    train, valid = _splits(tmp_path, title_rule=True, n_train=16)
    config = _config(
        tiny_llama_dir,
        train,
        valid,
        tmp_path / "out",
        lora_dropout=0.5,
        lora_top_layers=2,
        train_top_layers=1,
    )
    base, tokenizer = load_causal_lm(tiny_llama_dir, dtype=torch.float32, device="cpu")
    model = attach_lora(base, config)
    dropouts = {
        name: type(module.lora_dropout["default"]).__name__
        for name, module in model.named_modules()
        if hasattr(module, "lora_dropout")
    }
    assert dropouts and all(
        kind == ("Identity" if ".layers.0." in name else "Dropout") for name, kind in dropouts.items()
    )

    data = build_prompts(read_split(train))
    token_ids = [list(ids) for ids in tokenizer(data.prompts)["input_ids"]]
    groups = [make_group(token_ids, [row]) for row in range(len(data))]
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B = 0 (a fresh LoRA) would hide any dropout
            torch.nn.init.normal_(parameter, std=0.5)
    for module in model.modules():  # put a dropout back in the frozen layer (another base model's, say)
        if hasattr(module, "lora_dropout") and isinstance(module.lora_dropout["default"], torch.nn.Identity):
            module.lora_dropout["default"] = torch.nn.Dropout(0.5)
    model.train()
    ids = torch.tensor([token_ids[0]])
    with torch.no_grad():  # the dropout is really there in train mode
        assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    first, again = (compute_trunk(model, groups, 0, 1, 8) for _ in range(2))
    assert model.training  # the caller's mode is given back
    model.eval()
    reference = compute_trunk(model, groups, 0, 1, 8)
    for row, states in reference.rests.items():
        assert torch.equal(first.rests[row], states) and torch.equal(again.rests[row], states)


def test_a_stored_trunk_is_read_back_not_recomputed(tiny_llama, tmp_path, monkeypatch):
    import model_store.llm.trunk_store as trunk_store
    from model_store.llm.grouped import make_group

    model, tokenizer = tiny_llama
    data = build_prompts(read_split(_splits(tmp_path, title_rule=True, n_train=24)[0]))
    token_ids = [list(ids) for ids in tokenizer(data.prompts)["input_ids"]]
    groups = [make_group(token_ids, [row]) for row in range(len(data))]  # one group per row: several parts
    first = trunk_store.cached_trunk(model, groups, 0, 1, 8, store=tmp_path / "s", tag="t", part_groups=2)
    assert len(list((tmp_path / "s").glob("trunk-*/part-*.pt"))) == -(-len(groups) // 2) > 1

    def no_compute(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed a stored trunk")

    monkeypatch.setattr(trunk_store, "compute_trunk", no_compute)
    again = trunk_store.cached_trunk(model, groups, 0, 1, 8, store=tmp_path / "s", tag="t", part_groups=2)
    assert again.rests.keys() == first.rests.keys() and again.prefixes.keys() == first.prefixes.keys()
    for row, tensor in first.rests.items():
        assert torch.equal(again.rests[row], tensor)
    with pytest.raises(AssertionError, match="recomputed"):  # another tag (model, dtype): another trunk
        trunk_store.cached_trunk(model, groups, 0, 1, 8, store=tmp_path / "s", tag="other", part_groups=2)


def _rule_codebook(uids: list[int], iids: list[int], item_mask: int = 0) -> CodeBook:
    """`RuleCodes` as a real codebook of these ids (item codes XOR `item_mask`), with its weak code score."""
    rule, users, items = RuleCodes(), np.unique(uids), np.unique(iids)
    item_codes = [(rule.item_code(int(i)) or 0) ^ item_mask for i in items]
    return CodeBook(
        bits=32,
        user_ids=users.astype(np.int64),
        user_codes=np.array([rule.user_code(int(u)) for u in users], dtype=np.uint64),
        item_ids=items.astype(np.int64),
        item_codes=np.array(item_codes, dtype=np.uint64),
        unknown_user_code=0,
        unknown_item_code=0,
        scale=0.01,
        bias=0.0,
    )


def test_oof_codes_reach_the_train_prompts_and_the_skip_of_a_residual_tune(
    tiny_llama_dir, tmp_path, monkeypatch
):
    """`--oof-codes`: train rows of the other fold are prompted with that fold's codes, valid rows with --codes."""
    import model_store.llm.tune as tune_module

    train, valid = _splits(tmp_path, title_rule=False, n_train=32)
    train_table, valid_table = read_split(train), read_split(valid)
    ids = {
        side: train_table.column(side).to_pylist() + valid_table.column(side).to_pylist()
        for side in ("uid", "iid")
    }
    served = _rule_codebook(ids["uid"], ids["iid"])
    other = _rule_codebook(ids["uid"], ids["iid"], item_mask=0x0000FFFF)
    fold_of_row = np.arange(train_table.num_rows) % 2
    folds = OutOfFoldCodes(
        [served, other], fold_of_row, fingerprint(Interactions.from_table(train_table)),
        {"folds": 2, "reference_version": served.version},
    )  # fmt: skip
    write_out_of_fold(folds, tmp_path / "oof")
    built: list[PromptSet] = []

    def recording(*args: object, **kwargs: object) -> PromptSet:
        built.append(build_prompts(*args, **kwargs))  # type: ignore[arg-type]
        return built[-1]

    monkeypatch.setattr(tune_module, "build_prompts", recording)
    config = _config(
        tiny_llama_dir, train, valid, tmp_path / "out", stages=(2,), codes="x", objective="residual",
        epochs=1, precision="fp32", oof_codes=str(tmp_path / "oof"),
    )  # fmt: skip
    card = tune(config, codes=served)
    train_set, valid_set = built
    assert train_set.row_codes is not None and valid_set.row_codes is not None
    assert train_set.rows is not None and {int(fold_of_row[row]) for row in train_set.rows} == {0, 1}
    for (_, item_code), row, iid in zip(train_set.row_codes, train_set.rows, train_set.iids, strict=True):
        assert item_code == (other if fold_of_row[row] else served).item_code(iid)
    assert [code for _, code in valid_set.row_codes] == [served.item_code(i) for i in valid_set.iids]
    assert card.fusion is not None and card.fusion.codes == served.code_score()
