"""bench/gpu_scoring.py's one-sequence-per-user layout computes what separate prompts would, and runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch
from transformers import LlamaConfig, LlamaModel

BENCH = Path(__file__).resolve().parents[3] / "bench" / "gpu_scoring.py"


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_scoring", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tree_layout_equals_each_candidate_scored_as_its_own_prompt() -> None:
    prefix_len, suffix_len, k = 5, 3, 4
    mask, positions, last = bench_module().tree_layout(prefix_len, suffix_len, k)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=50,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaModel(config).eval()
    ids = torch.randint(0, 50, (1, mask.shape[0]))
    with torch.inference_mode():
        tree = model(
            input_ids=ids, attention_mask=mask[None, None], position_ids=positions[None]
        ).last_hidden_state
        for j in range(k):
            own = ids[:, prefix_len + j * suffix_len : prefix_len + (j + 1) * suffix_len]
            alone = model(input_ids=torch.cat([ids[:, :prefix_len], own], dim=1)).last_hidden_state[0, -1]
            torch.testing.assert_close(tree[0, last[j]], alone, atol=1e-5, rtol=1e-4)


def test_runs_end_to_end_on_cpu_and_prints_its_figure() -> None:
    command = [sys.executable, str(BENCH), "--shape", "smollm2", "--device", "cpu", "--users", "1"]
    command += ["--candidates", "2", "--prefix-tokens", "8", "--suffix-tokens", "3", "--repeats", "1"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    assert "scores finite: True" in out and out.strip().splitlines()[-1].startswith("candidates_per_s: ")
