"""`binllm llm tune` under `torchrun --nproc_per_node 2` (gloo, CPU) on the tiny Llama: the same loss curve and
adapter as one process at the same global batch, rank 0 writing the outputs, and `--resume` from the ranks'
own checkpoints.

    .venv/bin/pytest -q tests/integration/test_tune_ddp.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model_store.llm.tune import tune
from tests.unit.model_store.llm.test_tune import _config, _splits

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BINLLM = Path(sys.executable).parent / "binllm"
COMMON = {
    "epochs": 2,
    "lr": 1e-2,
    "batch_size": 16,
    "lora_dropout": 0.0,
    "eval_every": 2,
    "patience": 5,
    "precision": "fp32",  # equal numbers are asserted: bf16 autocast (auto on AMX / AVX512-BF16) rounds apart
}


def torchrun_tune(
    base: Path, train: Path, valid: Path, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node 2 --no-python binllm llm tune ...` on the CPU."""
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
        str(BINLLM), "llm", "tune", "--base", str(base), "--train", str(train), "--valid", str(valid),
        "--out", str(out), "--stages", "1", "--device", "cpu", "--no-progress",
        "--epochs", str(COMMON["epochs"]), "--lr", str(COMMON["lr"]), "--batch-size", str(COMMON["batch_size"]),
        "--lora-dropout", "0", "--eval-every", str(COMMON["eval_every"]), "--patience", str(COMMON["patience"]),
        "--precision", str(COMMON["precision"]), *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)


def adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter" / "adapter_model.safetensors"))


def test_two_gloo_processes_tune_what_one_process_tunes_and_resume(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    train, valid = _splits(tmp_path, title_rule=True, n_train=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # as each torchrun rank (OMP_NUM_THREADS=1): the tiny model gains nothing from more
    try:
        tune(_config(tiny_llama_dir, train, valid, tmp_path / "one", **COMMON))
    finally:
        torch.set_num_threads(threads)
    two = torchrun_tune(tiny_llama_dir, train, valid, tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]

    one_metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two_metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (one_metrics["world_size"], two_metrics["world_size"]) == (1, 2)
    assert len(one_metrics["losses"]) == len(two_metrics["losses"]) == 8  # 64 rows / 16 x 2 epochs
    np.testing.assert_allclose(two_metrics["losses"], one_metrics["losses"], rtol=1e-4, atol=1e-5)
    evals = [e["auc"] for e in two_metrics["stages"]["stage1"]["evals"]]
    np.testing.assert_allclose(evals, [e["auc"] for e in one_metrics["stages"]["stage1"]["evals"]], atol=1e-6)
    one, both = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert one.keys() == both.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(both[name], tensor, rtol=1e-4, atol=1e-5)
    assert not list((tmp_path / "two").glob(".rank*"))  # rank 1's scratch outputs are gone after a clean run

    again = torchrun_tune(tiny_llama_dir, train, valid, tmp_path / "two", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    for name, tensor in adapter(tmp_path / "two").items():
        torch.testing.assert_close(tensor, both[name], rtol=0, atol=0)
