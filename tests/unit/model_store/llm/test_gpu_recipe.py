"""The GPU recipe's two halves: the carried GGUF's split/join, and scripts/gpu_recipe.sh end to end on CPU.

No GPU here: the recipe runs with `BINLLM_RECIPE_DEVICE=cpu`, a tiny random Llama as the base and a few
made-up rows in the papers' JSON-lines format (ML-1M ids, so the shipped codes know some of them), which
checks every command line the lent machine will run and what comes back in $OUT.
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

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_carry import SPLITS, join_parts, prepare, split_file  # noqa: E402


def test_a_split_file_joins_back_to_the_same_bytes(tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_bytes(np.random.default_rng(0).bytes(300_001))
    digest = split_file(source, tmp_path / "a" / "part.0", tmp_path / "b" / "part.1", first_bytes=100_000)
    assert (tmp_path / "a" / "part.0").stat().st_size == 100_000
    joined = join_parts([tmp_path / "a" / "part.0", tmp_path / "b" / "part.1"], digest, tmp_path / "out.gguf")
    assert joined.read_bytes() == source.read_bytes()


def test_a_damaged_or_missing_part_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_bytes(b"x" * 5_000)
    digest = split_file(source, tmp_path / "a" / "part.0", tmp_path / "b" / "part.1", first_bytes=1_000)
    (tmp_path / "b" / "part.1").write_bytes(b"y" * 4_000)
    with pytest.raises(SystemExit, match="do not match"):
        join_parts([tmp_path / "a" / "part.0", tmp_path / "b" / "part.1"], digest, tmp_path / "out.gguf")
    with pytest.raises(SystemExit, match="missing carried part"):
        join_parts([tmp_path / "a" / "gone.0"], digest, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


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
def carried(tmp_path: Path) -> Path:
    """A carry folder as `prepare` writes it (a small stand-in GGUF, made-up splits, no wheels)."""
    data = tmp_path / "data"
    data.mkdir()
    for seed, name in enumerate(SPLITS):
        write_rows(data / name, 48 if name.startswith("train") else 24, seed)
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"gguf" * 1000)
    prepare(tmp_path / "carry", data, gguf, wheels=False)
    return tmp_path / "carry"


def test_prepare_writes_two_parts_the_splits_and_a_checksum(carried: Path) -> None:
    assert sorted(p.name for p in (carried / "b" / "data").iterdir()) == sorted(SPLITS)
    assert (carried / "a" / "SmolLM2-135M-Instruct.Q4_1.gguf.0").is_file()
    assert len((carried / "b" / "SmolLM2-135M-Instruct.Q4_1.gguf.sha256").read_text().strip()) == 64


def test_the_recipe_runs_end_to_end_on_cpu(carried: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(out),
        "BINLLM_CARRY": str(carried),
        "BINLLM_RECIPE_RUN": str(tmp_path / "run"),
        "BINLLM_RECIPE_BASE": str(tiny_llama_dir),
        "BINLLM_RECIPE_DEVICE": "cpu",
        "BINLLM_RECIPE_EPOCHS": "1",
        "BINLLM_RECIPE_BATCH": "8",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        ["bash", "scripts/gpu_recipe.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "eval_valid.json").read_text())
    assert metrics["n"] == 24 and 0.0 <= metrics["auc"] <= 1.0 and metrics["with_codes"] is True
    assert "warm" in metrics and "codes_only" in metrics
    assert "done" in (out / "recipe.log").read_text()
    with tarfile.open(out / "adapter_and_report.tar.gz") as tar:
        names = tar.getnames()
    assert "adapter/adapter_model.safetensors" in names and "adapter/binllm_adapter.json" in names
    assert any(name.startswith("report/") and name.endswith(".png") for name in names)
    assert json.loads((out / "tune_metrics.json").read_text())
