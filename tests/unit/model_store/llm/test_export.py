"""Export: the merged directory scores exactly like base + adapter, carries a valid manifest, and the vLLM
command is the one launcher's (model_store/contract/vllm_command.py), asking for the No piece first (so /classify
returns sigmoid(z_yes - z_no))."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from model_store.contract import vllm_command
from model_store.contract.prompts import CandidateItem, PromptStyle, UserContext, render_prompt
from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.errors import BinllmJobError
from model_store.llm.answer import find_answer_tokens
from model_store.llm.export import (
    export_base,
    export_merged,
    read_manifest,
    vllm_serve_command,
    weights_digest,
)
from model_store.llm.models import load_causal_lm
from model_store.llm.scorer import PromptScorer
from model_store.llm.tune import ADAPTER_CARD_FILENAME, AdapterCard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    render_prompt(
        UserContext(history_titles=("Heat (1995)", "Ran (1985)"), code=0x12345678),
        CandidateItem(title=title, code=code),
        PromptStyle(),
    )
    for title, code in [("Alien (1979)", 7), ("Jaws (1975)", 0xFFFF0000), ("Big (1988)", 3)]
]


@pytest.fixture
def adapter_dir(tiny_llama_dir: Path, tmp_path: Path) -> Path:
    """A LoRA adapter with random, non-zero B (so merging changes the scores) and a tuning card."""
    base, _ = load_causal_lm(tiny_llama_dir, dtype=torch.float32, device="cpu")
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, lora)
    out = tmp_path / "adapter"
    model.save_pretrained(str(out))
    card = AdapterCard(
        base_model=str(tiny_llama_dir),
        prompt_style=PromptStyle(),
        with_codes=True,
        code_version="codes-v7",
        stages=(1, 2),
        metrics={"valid_auc": 0.75},
    )
    (out / ADAPTER_CARD_FILENAME).write_text(card.model_dump_json())
    return out


def _scores(model: Any, tokenizer: Any) -> torch.Tensor:
    return torch.tensor(PromptScorer(model, tokenizer).score_prompts(PROMPTS))


def test_merged_model_scores_like_base_plus_adapter_and_unlike_base(tiny_llama_dir, adapter_dir, tmp_path):
    export_merged(adapter_dir, tmp_path / "merged")

    base, tokenizer = load_causal_lm(tiny_llama_dir, dtype=torch.float32, device="cpu")
    base_scores = _scores(base, tokenizer)
    with_adapter = _scores(PeftModel.from_pretrained(base, str(adapter_dir)), tokenizer)
    merged, merged_tokenizer = load_causal_lm(tmp_path / "merged", dtype=torch.float32, device="cpu")
    merged_scores = _scores(merged, merged_tokenizer)

    torch.testing.assert_close(merged_scores, with_adapter, rtol=0, atol=1e-5)
    assert (merged_scores - base_scores).abs().max() > 1e-3
    assert not any(name.startswith("adapter") for name in (p.name for p in (tmp_path / "merged").iterdir()))


def test_manifest_is_written_from_the_adapter_card_and_validates(tiny_llama_dir, adapter_dir, tmp_path):
    returned = export_merged(adapter_dir, tmp_path / "merged")

    on_disk = ModelManifest.model_validate_json((tmp_path / "merged" / MANIFEST_FILENAME).read_text())
    assert on_disk == returned == read_manifest(tmp_path / "merged")
    _, tokenizer = load_causal_lm(tiny_llama_dir, dtype=torch.float32, device="cpu")
    answer = find_answer_tokens(tokenizer)
    assert (on_disk.yes_token, on_disk.yes_token_id) == (answer.yes_token, answer.yes_id)
    assert (on_disk.no_token, on_disk.no_token_id) == (answer.no_token, answer.no_id)
    assert on_disk.with_codes is True and on_disk.code_version == "codes-v7"
    assert on_disk.metrics["valid_auc"] == 0.75
    assert on_disk.base_model == str(tiny_llama_dir)
    assert on_disk.model_version == weights_digest(tmp_path / "merged")


def test_model_version_changes_with_the_weights(tiny_llama_dir, adapter_dir, tmp_path):
    merged = export_merged(adapter_dir, tmp_path / "merged")
    base = export_base(tiny_llama_dir, tmp_path / "base")
    assert merged.model_version != base.model_version
    assert base.with_codes is False and base.code_version is None


def test_export_base_can_declare_code_prompts(tiny_llama_dir, tmp_path):
    manifest = export_base(tiny_llama_dir, tmp_path / "base", with_codes=True, code_version="c1")
    assert read_manifest(tmp_path / "base") == manifest
    assert manifest.with_codes is True and manifest.code_version == "c1"
    assert (tmp_path / "base" / "model.safetensors").is_file()
    assert (tmp_path / "base" / "tokenizer.json").is_file()


def test_export_refuses_a_directory_that_is_not_an_adapter(tmp_path):
    with pytest.raises(BinllmJobError, match=r"adapter_config\.json"):
        export_merged(tmp_path, tmp_path / "out")


def test_vllm_command_is_the_launchers_line_for_the_exported_directory(tiny_llama_dir, tmp_path):
    """export, the Compose launcher and the Helm chart's pod build one line (tests/compose, tests/chart)."""
    out = tmp_path / "served"
    manifest = export_base(tiny_llama_dir, out)
    argv = vllm_serve_command(out)
    assert argv == vllm_command.serve_argv(out, {})
    assert argv[:3] == ["vllm", "serve", str(out)]
    overrides = json.loads(argv[argv.index("--hf-overrides") + 1])
    assert overrides == {
        "architectures": ["LlamaForSequenceClassification"],
        "classifier_from_token": [manifest.no_token, manifest.yes_token],
        "method": "from_2_way_softmax",
    }


def test_vllm_command_takes_the_launchers_settings(tiny_llama_dir, tmp_path):
    out = tmp_path / "served"
    export_base(tiny_llama_dir, out)
    env = {vllm_command.DEVICE_ENV: "cpu", "BINLLM_SERVE_PORT": "9001"}
    assert vllm_serve_command(out, env) == vllm_command.serve_argv(out, env)


@pytest.mark.parametrize("flag", ["--progress", "--no-progress"])
def test_export_draws_transformers_bars_only_with_progress(
    tiny_llama_dir: Path, tmp_path: Path, flag: str
) -> None:
    """'Loading weights' and 'Writing model shards' are transformers' own bars: --no-progress hides them too."""
    from typer.testing import CliRunner

    from model_store.llm.commands import llm_app

    args = ["export", "--base", str(tiny_llama_dir), "--out", str(tmp_path / "merged"), flag]
    result = CliRunner().invoke(llm_app, args)
    assert result.exit_code == 0, result.output
    bars = [name for name in ("Loading weights", "Writing model shards") if name in result.output]
    assert bars == ([] if flag == "--no-progress" else ["Loading weights", "Writing model shards"])
