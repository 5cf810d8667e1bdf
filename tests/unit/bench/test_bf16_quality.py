"""bench/bf16_quality.py scores the same rows in fp32, bf16 and fp32 batched otherwise, and prints their AUCs,
the paired bootstrap intervals of bf16 - fp32 and of the fp32 jitter, and the score differences."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from model_store.data.io import rows_to_table, write_split

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bf16_quality.py"


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bf16_quality", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def split(tmp_path: Path) -> Path:
    histories = [["", "Heat (1995)"], ["Heat (1995)", "Fargo (1996)"], ["Alien (1979)"], ["Heat (1995)"]]
    rows = [
        {
            "uid": uid,
            "iid": iid,
            "label": int((uid * 7 + iid * 3) % 5 < 2),
            "timestamp": uid * 1000 + iid,
            "his": [0, 5],
            "his_title": histories[uid],
            "title": f"Film {iid} (1999)",
            "flag": 0,
            "not_cold": 1,
        }
        for uid in range(4)
        for iid in range(10, 18)
    ]
    return write_split(rows_to_table(rows), tmp_path / "valid.parquet")


@pytest.mark.usefixtures("one_torch_thread")
def test_scores_the_same_rows_in_both_dtypes_and_prints_the_summary_last(
    tiny_llama_dir: Path, split: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model", str(tiny_llama_dir), "--no-codes", "--split", str(split), "--device", "cpu"]
    argv += ["--max-samples", "24", "--rows-per-call", "10", "--jitter-batch-size", "3", "--resamples", "50"]
    summary = bench_module().main([*argv, "--scores-dir", str(tmp_path / "scores")])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line.get("run") for line in lines] == ["float32", "bfloat16", "float32_rebatched", None]
    assert [line.get("dtype") for line in lines[:3]] == ["float32", "bfloat16", "float32"]
    assert lines[-1] == summary
    for line in lines[:3]:
        assert {"auc", "uauc", "logloss", "n", "seconds", "candidates_per_s"} <= set(line)
        assert line["n"] == 24
    expected = {"auc_fp32", "auc_bf16", "d_auc", "uauc_fp32", "uauc_bf16", "d_uauc", "max_abs_diff"}
    expected |= {"p99_abs_diff", "within_0_001", "n_rows", "cpu", "cpu_has_bf16", "torch_threads"}
    assert expected <= set(summary)
    assert summary["n_rows"] == 24 and summary["torch_threads"] == 1
    assert summary["auc_fp32"] == lines[0]["auc"] and summary["auc_bf16"] == lines[1]["auc"]
    assert abs(summary["d_auc"]) < 0.05 and abs(summary["d_uauc"]) < 0.1
    assert 0 < summary["p99_abs_diff"] <= summary["max_abs_diff"] < 0.05  # bf16 really ran, and stayed close
    low, high = summary["d_auc_ci"]
    assert low <= summary["d_auc"] <= high and summary["resamples"] == 50
    assert summary["jitter_max_abs_diff"] < 1e-4  # fp32 batched otherwise: rounding only
    assert isinstance(summary["keep_bf16"], bool)
    # a rerun with the same rows reuses the saved scores: the same summary, no model run
    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == [
        "bfloat16.npz",
        "float32.npz",
        "float32_rebatched.npz",
    ]
    again = bench_module().main([*argv, "--scores-dir", str(tmp_path / "scores")])
    assert (again["d_auc"], again["bf16_speedup"]) == (summary["d_auc"], summary["bf16_speedup"])


@pytest.mark.usefixtures("one_torch_thread")
def test_the_int8_engine_is_compared_with_fp32_the_same_way(
    tiny_llama_dir: Path, split: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model", str(tiny_llama_dir), "--no-codes", "--split", str(split), "--device", "cpu"]
    argv += ["--max-samples", "24", "--rows-per-call", "10", "--resamples", "50", "--candidate", "int8"]
    summary = bench_module().main(argv)
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line.get("run") for line in lines] == ["float32", "int8", "float32_rebatched", None]
    assert [line.get("dtype") for line in lines[:3]] == ["float32", "int8", "float32"]
    assert summary["candidate"] == "int8" and summary["auc_int8"] == lines[1]["auc"]
    assert isinstance(summary["keep_int8"], bool) and "int8_speedup" in summary
    assert "auc_bf16" not in summary and summary["isa_capped"] is None
    assert 0 < summary["max_abs_diff"] < 0.1  # int8 really ran, and stayed close


@pytest.mark.usefixtures("one_torch_thread")
def test_the_jitter_run_can_score_a_seeded_share_of_whole_users(
    tiny_llama_dir: Path, split: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model", str(tiny_llama_dir), "--no-codes", "--split", str(split), "--device", "cpu"]
    argv += ["--max-samples", "32", "--resamples", "50", "--jitter-max-samples", "9"]
    summary = bench_module().main([*argv, "--scores-dir", str(tmp_path / "scores")])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["n"] for line in lines[:3]] == [32, 32, summary["jitter_rows"]]
    assert 9 <= summary["jitter_rows"] < 32 and summary["jitter_rows"] % 8 == 0  # whole users of 8 rows
    assert summary["n_rows"] == 32
    assert summary["jitter_max_abs_diff"] < 1e-4
    low, high = summary["jitter_d_auc_ci"]
    assert low <= 0 <= high
    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == [
        "bfloat16.npz",
        "float32.npz",
        "float32_rebatched_9.npz",  # a share is saved apart from a whole run
    ]
