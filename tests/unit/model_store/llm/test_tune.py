"""Two-stage LoRA tuning on a tiny random Llama: the loss falls, synthetic rules are learned, resume is exact.

The rules are learnable only from what the prompt carries: stage 1 from a word in the title, stage 2 from
the item's code (titles carry nothing). A random model already separates two different words by chance, in
one direction or the other, so each test first orients the rule AGAINST the untuned model (its AUC < 0.5):
reaching AUC > 0.9 then means the adapter learned the rule.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from model_store.contract.fusion import CodeScore
from model_store.data.io import rows_to_table, write_split
from model_store.llm.checkpoint import list_checkpoints
from model_store.llm.evaluate import evaluate_split
from model_store.llm.trainer import StageTrainer
from model_store.llm.tune import CONFIG_FILENAME, TuneConfig, read_adapter_card, tune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class RuleCodes:
    """The item code's top byte is all ones for odd item ids, all zeros for even ones."""

    bits: int = 32
    version: str = "rule-codes-v1"

    def user_code(self, uid: int) -> int | None:
        return 0x5A5A0000 + uid

    def item_code(self, iid: int) -> int | None:
        low = (iid * 2654435761) % (1 << 24)
        return (0xFF000000 | low) if iid % 2 else low

    unknown_user_code: int = 0
    unknown_item_code: int = 0

    def code_score(self) -> CodeScore:
        """A code score that reads the rule only weakly (scale 0.01): the LLM has something to add."""
        return CodeScore(bits=32, scale=0.01, bias=0.0, unknown_user_code=0, unknown_item_code=0)


def _rows(n: int, seed: int, *, title_rule: bool, flip: bool = False) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        iid = seed * 10_000 + index
        label = (iid % 2) ^ flip  # flipping labels, not features, mirrors the untuned AUC exactly
        word = ("Sunny" if iid % 2 else "Gloomy") if title_rule else "Film"
        rows.append(
            {
                "uid": index % 5,
                "iid": iid,
                "label": label,
                "timestamp": index,
                "his": [0, 1],
                "his_title": ["", "Old Movie (1990)"],
                "title": f"{word} Day {rng.randint(1, 99)} (19{rng.randint(50, 99)})",
                "flag": -1,
                "not_cold": 1,
            }
        )
    return rows


def _splits(tmp_path: Path, *, title_rule: bool, n_train: int = 80, flip: bool = False) -> tuple[Path, Path]:
    rows = {
        "train": _rows(n_train, 0, title_rule=title_rule, flip=flip),
        "valid": _rows(32, 1, title_rule=title_rule, flip=flip),
    }
    train = write_split(rows_to_table(rows["train"]), tmp_path / "train.parquet")
    valid = write_split(rows_to_table(rows["valid"]), tmp_path / "valid.parquet")
    return train, valid


def _config(base: Path, train: Path, valid: Path, out: Path, **overrides: object) -> TuneConfig:
    values: dict[str, object] = {
        "base_model": str(base),
        "train": str(train),
        "valid": str(valid),
        "out_dir": str(out),
        "stages": (1,),
        "epochs": 2,
        "lr": 1e-2,
        "batch_size": 16,
        "patience": 5,
        "progress": False,
        "device": "cpu",
    }
    values.update(overrides)
    return TuneConfig.model_validate(values)


def _adapter_weights(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def test_stage_one_loss_falls_and_a_title_rule_is_learned(tiny_llama_dir, tmp_path):
    train, valid = _splits(tmp_path, title_rule=True)
    if evaluate_split(tiny_llama_dir, valid, progress=False)["auc"] > 0.5:
        train, valid = _splits(tmp_path, title_rule=True, flip=True)
    before = evaluate_split(tiny_llama_dir, valid, progress=False)
    card = tune(_config(tiny_llama_dir, train, valid, tmp_path / "out"))

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    losses = metrics["losses"]
    assert len(losses) == 10  # 80 rows / 16 per batch * 2 epochs
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    after = evaluate_split(tiny_llama_dir, valid, adapter_dir=tmp_path / "out" / "adapter", progress=False)
    assert before["auc"] < 0.5
    assert after["auc"] > 0.9
    assert card.with_codes is False and card.stages == (1,)
    assert read_adapter_card(tmp_path / "out" / "adapter") == card


def test_stage_two_learns_a_rule_that_only_the_item_codes_carry(tiny_llama_dir, tmp_path):
    train, valid = _splits(tmp_path, title_rule=False)
    codes = RuleCodes()
    if evaluate_split(tiny_llama_dir, valid, codes=codes, progress=False)["auc"] > 0.5:
        train, valid = _splits(tmp_path, title_rule=False, flip=True)
    before = evaluate_split(tiny_llama_dir, valid, codes=codes, progress=False)
    config = _config(tiny_llama_dir, train, valid, tmp_path / "out", stages=(2,), codes="rule-codes")
    card = tune(config, codes=codes)

    text_only = evaluate_split(
        tiny_llama_dir, valid, adapter_dir=tmp_path / "out" / "adapter", progress=False
    )
    with_codes = evaluate_split(
        tiny_llama_dir, valid, adapter_dir=tmp_path / "out" / "adapter", codes=codes, progress=False
    )
    assert before["auc"] < 0.5 < 0.9 < with_codes["auc"]
    assert with_codes["n_cold"] == 0 and with_codes["code_version"] == codes.version
    assert text_only["n_cold"] == text_only["n"]  # a code-tuned model without codes sees only cold rows
    assert card.with_codes is True and card.code_version == codes.version


def test_both_stages_continue_one_adapter_and_record_each_stage(tiny_llama_dir, tmp_path):
    train, valid = _splits(tmp_path, title_rule=False, n_train=32)
    config = _config(tiny_llama_dir, train, valid, tmp_path / "out", stages=(1, 2), codes="x", epochs=1)
    tune(config, codes=RuleCodes())

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["stages"]) == {"stage1", "stage2"}
    # Batches hold whole prefix groups. Stage 1 (text only): one shared history, one group of 32 -> 2 batches;
    # stage 2: user codes split it into 5 groups (7, 7, 6, 6, 6) -> [7, 7], [6, 6], [6].
    assert len(metrics["losses"]) == 2 + 3
    written = TuneConfig.model_validate_json((tmp_path / "out" / CONFIG_FILENAME).read_text())
    assert written.code_version == RuleCodes().version and written.stages == (1, 2)


def test_shared_prefixes_give_the_loss_curve_of_whole_prompts(tiny_llama_dir, tmp_path):
    train, valid = _splits(tmp_path, title_rule=False, n_train=48)
    common = {
        "stages": (1, 2),
        "codes": "x",
        "epochs": 1,
        "lora_dropout": 0.0,
        "batch_size": 8,
        "precision": "fp32",
    }
    curves = {}
    for share in (True, False):
        out = tmp_path / f"share-{share}"
        tune(_config(tiny_llama_dir, train, valid, out, share_prefixes=share, **common), codes=RuleCodes())
        curves[share] = json.loads((out / "metrics.json").read_text())["losses"]
    assert len(curves[True]) == len(curves[False]) >= 8
    np.testing.assert_allclose(curves[True], curves[False], rtol=1e-4, atol=1e-5)
    assert max(curves[True]) - min(curves[True]) > 1e-3  # the loss moved, so equality means something


def test_bf16_autocast_follows_the_fp32_loss_curve_within_bf16_rounding(tiny_llama_dir, tmp_path):
    """The bf16 path ('auto' on CPUs with AMX / AVX512-BF16, forced here on any CPU): same curve, looser bar.

    bf16 keeps 8 bits of mantissa (relative error ~4e-3 per op); over a 2-layer model and a few steps the
    losses stay within a few percent of fp32's, while a broken bf16 path (wrong dtype reaching the loss, no
    gradient through autocast) would not train at all.
    """
    train, valid = _splits(tmp_path, title_rule=True, n_train=48)
    common = {"epochs": 2, "lora_dropout": 0.0, "batch_size": 8}
    curves = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        tune(_config(tiny_llama_dir, train, valid, out, precision=precision, **common))
        curves[precision] = json.loads((out / "metrics.json").read_text())["losses"]
    assert len(curves["bf16"]) == len(curves["fp32"]) >= 8
    np.testing.assert_allclose(curves["bf16"], curves["fp32"], rtol=5e-2, atol=1e-2)
    assert curves["bf16"] != curves["fp32"]  # autocast really ran in bf16
    assert max(curves["fp32"]) - min(curves["fp32"]) > 1e-2


def test_cached_trunk_gives_the_loss_curve_and_validations_of_the_full_pass(
    tiny_llama_dir, tmp_path, monkeypatch
):
    import model_store.llm.trunk_store as trunk_store

    computed = []
    real_compute = trunk_store.compute_trunk
    monkeypatch.setattr(
        trunk_store, "compute_trunk", lambda *a, **k: computed.append(a[3]) or real_compute(*a, **k)
    )
    train, valid = _splits(tmp_path, title_rule=False, n_train=48)
    common = {
        "stages": (1, 2),
        "codes": "x",
        "epochs": 2,
        "lora_dropout": 0.0,
        "lora_top_layers": 1,
        "precision": "fp32",
    }
    runs = {}
    for cached in (True, False):
        out = tmp_path / f"trunk-{cached}"
        tune(_config(tiny_llama_dir, train, valid, out, cache_trunk=cached, **common), codes=RuleCodes())
        runs[cached] = json.loads((out / "metrics.json").read_text())
    assert len(runs[True]["losses"]) == len(runs[False]["losses"]) >= 8
    np.testing.assert_allclose(runs[True]["losses"], runs[False]["losses"], rtol=1e-4, atol=1e-5)
    assert max(runs[True]["losses"]) - min(runs[True]["losses"]) > 1e-3
    aucs = {
        cached: [e["auc"] for s in run["stages"].values() for e in s["evals"]] for cached, run in runs.items()
    }
    assert len(aucs[True]) == 4
    assert computed == [1, 1, 1, 1]  # train and valid, once per stage each: layer 0 run once, not per epoch
    np.testing.assert_allclose(aucs[True], aucs[False], atol=1e-6)


def test_resume_after_a_crash_ends_with_the_same_adapter_as_an_uninterrupted_run(
    tiny_llama_dir, tmp_path, monkeypatch
):
    train, valid = _splits(tmp_path, title_rule=True, n_train=64)
    common = {"eval_every": 2, "lora_dropout": 0.0, "epochs": 2, "precision": "fp32"}
    tune(_config(tiny_llama_dir, train, valid, tmp_path / "whole", **common))

    original_step = StageTrainer._step

    def crash_at_step_five(self: StageTrainer, state: object, loss: float) -> None:
        original_step(self, state, loss)  # type: ignore[arg-type]
        if state.global_steps == 5:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    monkeypatch.setattr(StageTrainer, "_step", crash_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        tune(_config(tiny_llama_dir, train, valid, tmp_path / "resumed", **common))
    assert list_checkpoints(tmp_path / "resumed")[-1].name == "step-00000004"
    monkeypatch.setattr(StageTrainer, "_step", original_step)
    tune(_config(tiny_llama_dir, train, valid, tmp_path / "resumed", resume=True, **common))

    # The losses of steps 5-8 depend on the restored adapter, optimizer moments and LR schedule.
    whole_losses = json.loads((tmp_path / "whole" / "metrics.json").read_text())["losses"]
    resumed_losses = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["losses"]
    assert len(whole_losses) == len(resumed_losses) == 8
    np.testing.assert_allclose(resumed_losses, whole_losses, rtol=1e-5, atol=1e-6)
    whole = _adapter_weights(tmp_path / "whole" / "adapter")
    resumed = _adapter_weights(tmp_path / "resumed" / "adapter")
    assert whole.keys() == resumed.keys()
    for name, tensor in whole.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)
    assert max(float(t.abs().max()) for name, t in whole.items() if "lora_B" in name) > 0


def test_init_adapter_starts_from_a_saved_adapter_and_refuses_another_lora_shape(tiny_llama_dir, tmp_path):
    train, valid = _splits(tmp_path, title_rule=True, n_train=32)
    tune(_config(tiny_llama_dir, train, valid, tmp_path / "first", epochs=1))
    first = _adapter_weights(tmp_path / "first" / "adapter")
    assert any(float(w.abs().max()) > 0 for k, w in first.items() if "lora_B" in k)  # it learned something
    again = _config(tiny_llama_dir, train, valid, tmp_path / "again", epochs=1, lr=1e-12)
    tune(again.model_copy(update={"init_adapter": str(tmp_path / "first" / "adapter")}))
    continued = _adapter_weights(tmp_path / "again" / "adapter")
    assert continued.keys() == first.keys()
    assert all(torch.allclose(continued[k], first[k], atol=1e-6) for k in first)
    other_shape = _config(tiny_llama_dir, train, valid, tmp_path / "bad", lora_r=4)
    with pytest.raises(RuntimeError):
        tune(other_shape.model_copy(update={"init_adapter": str(tmp_path / "first" / "adapter")}))


def test_config_refuses_stage_two_without_codes_and_unordered_stages(tmp_path):
    with pytest.raises(ValidationError):
        _config(tmp_path, tmp_path, tmp_path, tmp_path, stages=(2,))
    with pytest.raises(ValidationError):
        _config(tmp_path, tmp_path, tmp_path, tmp_path, stages=(2, 1), codes="c")
    config = _config(tmp_path, tmp_path, tmp_path, tmp_path)
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    assert config.target_modules == ("q_proj", "v_proj")
    with pytest.raises(ValidationError):
        config.lr = 1.0


def test_select_last_ships_the_last_step_and_best_the_best_validation(tiny_llama_dir, tmp_path):
    """Same seed, same steps: 'best' ends with the best validation's weights, 'last' with the final step's."""
    train, valid = _splits(tmp_path, title_rule=True)
    cards = {}
    for select in ("best", "last"):
        config = _config(
            tiny_llama_dir, train, valid, tmp_path / select, eval_every=1, select=select, precision="fp32"
        )
        cards[select] = tune(config)
    evals = json.loads((tmp_path / "last" / "metrics.json").read_text())["stages"]["stage1"]["evals"]
    aucs = [record["auc"] for record in evals]
    assert int(np.argmax(aucs)) < len(aucs) - 1  # the best validation came before the last step
    best, last = (_adapter_weights(tmp_path / name / "adapter") for name in ("best", "last"))
    assert all(
        torch.equal(best[key], value)
        for key, value in _adapter_weights(tmp_path / "best" / "stage1" / "best").items()
    )
    assert any(not torch.equal(best[key], last[key]) for key in best)
    assert cards["best"].metrics["valid_auc"] == max(aucs) and cards["last"].metrics["valid_auc"] == aucs[-1]
    assert cards["last"].metrics["selected"] == "last"
