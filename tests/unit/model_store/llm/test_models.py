"""Model loading: the converted SmolLM2 directory, load_causal_lm's defaults, the tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from model_store.llm import models
from model_store.llm.models import (
    build_tiny_llama,
    ensure_smollm2,
    load_causal_lm,
    prepare_tokenizer,
    smollm2_cache_dir,
)


def test_smollm2_cache_dir_follows_binllm_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BINLLM_CACHE_DIR", str(tmp_path))
    assert smollm2_cache_dir() == tmp_path / "smollm2-135m-instruct"


def test_ensure_smollm2_reuses_a_converted_dir_without_fetching(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_network(path: Path) -> Path:
        raise AssertionError("must not fetch when the directory is already converted")

    monkeypatch.setattr(models, "_fetch_gguf", no_network)
    target = tmp_path / "converted"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"")
    assert ensure_smollm2(target) == target


def test_converted_smollm2_is_a_plain_llama_with_head_dim_64(smollm2_dir: Path) -> None:
    raw = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in raw
    assert raw["architectures"] == ["LlamaForCausalLM"]
    assert raw["rope_theta"] == raw["rope_parameters"]["rope_theta"]  # legacy readers see the same RoPE
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert config.model_type == "llama"
    assert config.head_dim == 64 == config.hidden_size // config.num_attention_heads
    assert json.loads((smollm2_dir / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "PreTrainedTokenizerFast"
    )


def test_prepare_tokenizer_pads_left_with_eos_when_there_is_no_pad(smollm2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.pad_token = None
    tokenizer.padding_side = "right"
    prepare_tokenizer(tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["a", "a b c d"], padding=True)
    assert batch["attention_mask"][0][-1] == 1  # the short row's last real token sits at -1


def test_load_causal_lm_defaults_to_fp32_eval_on_cpu(tiny_llama_dir: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_llama_dir, device="cpu")
    assert model.dtype == torch.float32
    assert not model.training
    assert tokenizer.pad_token is not None
    assert tokenizer.padding_side == "left"


def test_build_tiny_llama_is_deterministic_per_seed_and_leaves_global_rng_alone(smollm2_dir: Path) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, tokenizer = build_tiny_llama(smollm2_dir, seed=0)
    assert torch.equal(torch.rand(1), expected_next)
    again, _ = build_tiny_llama(smollm2_dir, seed=0)
    other, _ = build_tiny_llama(smollm2_dir, seed=1)
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])
    assert first.config.vocab_size == len(tokenizer)
    head_dim = first.config.head_dim
    assert head_dim is not None
    assert head_dim * first.config.num_attention_heads == first.config.hidden_size


def test_build_tiny_llama_saves_a_directory_that_loads_back_identically(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    built, _ = build_tiny_llama(smollm2_dir, tmp_path, seed=3)
    loaded, tokenizer = load_causal_lm(tmp_path, device="cpu")
    ids = tokenizer(["#Answer:"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.allclose(built(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_wrapping_a_model_in_lora_shows_no_deprecation_warning(tiny_llama_dir: Path) -> None:
    """peft reads transformers' deprecated `is_gradient_checkpointing`; model_store.llm hides that one warning."""
    import warnings

    from peft import LoraConfig, get_peft_model

    model, _ = load_causal_lm(tiny_llama_dir)
    with warnings.catch_warnings(record=True) as caught:
        get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)] == []
