"""scripts/eval_table.py --whole: the model card's whole-valid table from two `binllm llm eval` lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _line(auc: float, score: str) -> dict[str, object]:
    gap = {"diff": auc - 0.74, "low": auc - 0.75, "high": auc - 0.73, "level": 0.95, "resamples": 1000}
    return {
        "auc": auc, "uauc": 0.69, "logloss": 0.61, "n": 10401, "score": score,
        "warm": {"auc": 0.76}, "cold": {"auc": 0.65},
        "codes_only": {"auc": 0.7397, "uauc": 0.6858, "logloss": 0.6116, "n": 10401},
        "vs_codes": {"auc": gap, "uauc": gap},
    }  # fmt: skip


def test_whole_valid_table_has_codes_baseline_and_residual_rows_with_intervals(tmp_path):
    paths = []
    for name, auc, score in (("baseline", 0.7241, "p_yes"), ("residual", 0.7512, "blend")):
        path = tmp_path / f"{name}.json"
        path.write_text("noise before\n" + json.dumps(_line(auc, score)) + "\n")
        paths.append(str(path))
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval_table.py"), "--whole", *paths],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert out[0].startswith("| model | AUC |") and len(out) == 5
    assert out[2].startswith("| codes alone | 0.7397 | 0.6858 | 0.6116 |")
    assert "| baseline adapter (p_yes) | 0.7241 |" in out[3] and "-0.0159 [-0.0259, -0.0059]" in out[3]
    assert (
        "| residual objective (blend), served | 0.7512 |" in out[4] and "+0.0112 [+0.0012, +0.0212]" in out[4]
    )


def test_runs_table_labels_each_run_and_adds_p_yes_rows_where_a_blend_is_served(tmp_path):
    blend = {**_line(0.7400, "blend"), "p_yes": {"auc": 0.70, "uauc": 0.66, "logloss": 0.65, "n": 10401}}
    args = []
    for name, line in (("binllm", _line(0.7241, "p_yes")), ("collm", blend)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(line) + "\n")
        args.append(f"{name.upper()}, x=y={path}")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval_table.py"), "--runs", *args],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert len(out) == 6 and out[2].startswith("| codes alone | 0.7397 |")
    assert out[3].startswith("| BINLLM, x=y (p_yes), served | 0.7241 |") and "-0.0159 [" in out[3]
    assert out[4].startswith("| COLLM, x=y (blend), served | 0.7400 |") and "+0.0000 [" in out[4]
    assert out[5].startswith("| COLLM, x=y: its P(Yes) alone | 0.7000 | 0.6600 |")
