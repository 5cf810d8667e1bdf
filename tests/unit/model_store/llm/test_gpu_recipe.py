"""scripts/gpu_recipe.sh end to end on CPU, from a bundle as `binllm bundle` writes it.

No GPU here: the recipe runs with `BINLLM_RECIPE_DEVICE=cpu`, a tiny random Llama as the base and a few
made-up rows in the papers' JSON-lines format (ML-1M ids, so the shipped codes know some of them), which
checks every command line the recipe runs on a CUDA host and what it leaves in $OUT.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from model_store.bundle.commands import bundle_files
from model_store.bundle.parts import pack_bundle

ROOT = Path(__file__).resolve().parents[4]
SPLITS = ("train_ood2.jsonl.gz", "valid_ood2.jsonl.gz", "valid_small_ood2.jsonl.gz")


def write_rows(path: Path, n: int, seed: int) -> None:
    """`n` rows of made-up clicks in the papers' JSON-lines format, ML-1M-like ids."""
    rng = np.random.default_rng(seed)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for k in range(n):
            uid, iid = int(rng.integers(1, 7)), int(rng.integers(1, 40))
            row = {
                "uid": uid,
                "iid": iid,
                "label": int(rng.random() < 0.5),
                "timestamp": 1_000_000 + k,
                "his": [0, 5 + uid],
                "his_title": ["", f"Film {5 + uid} (1990)"],
                "title": f"Film {iid} (1999)",
                "flag": 0.0,
                "not_cold": int(iid < 30),
            }
            out.write(json.dumps(row) + "\n")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle as `binllm bundle --no-wheels` writes it (a small stand-in GGUF, made-up splits)."""
    data = tmp_path / "data"
    data.mkdir()
    for seed, name in enumerate(SPLITS):
        write_rows(data / name, 48 if name.startswith("train") else 24, seed)
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"gguf" * 1000)
    pack_bundle(bundle_files(data, gguf, []), tmp_path / "bundle", 64 * 2**10)
    return tmp_path / "bundle"


def test_the_recipe_runs_end_to_end_on_cpu_from_a_bundle(
    bundle: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(out),
        "BINLLM_BUNDLE": str(bundle),
        "BINLLM_CACHE_DIR": str(tmp_path / "cache"),
        "BINLLM_RECIPE_RUN": str(tmp_path / "run"),
        "BINLLM_RECIPE_BASE": str(tiny_llama_dir),
        "BINLLM_RECIPE_DEVICE": "cpu",
        "BINLLM_RECIPE_EPOCHS": "1",
        "BINLLM_RECIPE_BATCH": "8",
        "BINLLM_RECIPE_OBJECTIVE": "flip",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        ["bash", "scripts/gpu_recipe.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "eval_valid.json").read_text())
    assert metrics["n"] == 24 and 0.0 <= metrics["auc"] <= 1.0 and metrics["with_codes"] is True
    assert "warm" in metrics and "codes_only" in metrics
    assert metrics["score"] == "blend"  # flip, like residual, ships the fusion it was trained with
    assert "done" in (out / "recipe.log").read_text()
    with tarfile.open(out / "adapter_and_report.tar.gz") as tar:
        names = tar.getnames()
    assert "adapter/adapter_model.safetensors" in names and "adapter/binllm_adapter.json" in names
    assert any(name.startswith("report/") and name.endswith(".png") for name in names)
    assert json.loads((out / "tune_metrics.json").read_text())
    assert (tmp_path / "cache" / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes() == b"gguf" * 1000
    assert (tmp_path / "run" / "bundle" / "data" / "train_ood2.jsonl.gz").is_file()


def test_the_recipe_without_splits_says_where_to_put_them(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "BINLLM_BUNDLE": "none"}
    env["BINLLM_RECIPE_DATA"] = str(tmp_path / "nowhere")
    result = subprocess.run(
        ["bash", "scripts/gpu_recipe.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"no splits at {tmp_path / 'nowhere'}" in result.stderr
