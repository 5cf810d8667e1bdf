"""Evaluation scores any split, including ids the codes never saw, and the CLI prints one JSON line."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model_store.contract.prompts import PromptStyle
from model_store.data.io import read_split, rows_to_table, write_split
from model_store.llm.commands import llm_app
from model_store.llm.dataset import build_prompts
from model_store.llm.evaluate import evaluate_split, warm_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class KnownOnly:
    """Codes for users < 3 and items < 100 only: everything else is cold."""

    bits: int = 32
    version: str = "known-v1"
    unknown_user_code: int = 0xAAAAAAAA  # what a `unknown_codes="learned"` prompt writes for a missing code
    unknown_item_code: int = 0x55555555

    def user_code(self, uid: int) -> int | None:
        return uid + 11 if uid < 3 else None

    def item_code(self, iid: int) -> int | None:
        return iid * 3 if iid < 100 else None


@pytest.fixture
def split(tmp_path: Path) -> Path:
    rows = [
        {
            "uid": uid,
            "iid": iid,
            "label": (uid + iid) % 2,
            "timestamp": uid * 1000 + iid,
            "his": [0, 5],
            "his_title": ["", "Heat (1995)"],
            "title": f"Film {iid} (1999)",
            "flag": 0,
            "not_cold": 0,
        }
        for uid in (1, 2, 7)
        for iid in (10, 11, 250, 251)
    ]
    return write_split(rows_to_table(rows), tmp_path / "unseen.parquet")


def test_unknown_users_and_items_are_scored_text_only_and_counted_cold(tiny_llama_dir, split):
    metrics = evaluate_split(tiny_llama_dir, split, codes=KnownOnly(), progress=False)
    assert metrics["n"] == 12
    assert metrics["n_cold"] == 8  # user 7 (4 rows) + items 250/251 of users 1 and 2 (4 rows)
    assert metrics["with_codes"] is True and metrics["code_version"] == "known-v1"
    assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["uauc"] <= 1.0


def test_rows_with_a_learned_unknown_code_are_cold_for_the_blend(split):
    """Same wording (codes) on every row, but only rows with both own codes take the blend's warm weights."""
    data = build_prompts(read_split(split), codes=KnownOnly(), style=PromptStyle(unknown_codes="learned"))
    warm = warm_rows(data, KnownOnly())
    assert warm.tolist() == [uid < 3 and iid < 100 for uid, iid in zip(data.uids, data.iids, strict=True)]
    assert warm.sum() == 4
    assert not warm_rows(data, None).any()  # a text-only model: every row is cold


def test_codes_change_the_scores_of_warm_rows(tiny_llama_dir, split):
    with_codes = evaluate_split(tiny_llama_dir, split, codes=KnownOnly(), progress=False)
    text_only = evaluate_split(tiny_llama_dir, split, progress=False)
    assert text_only["with_codes"] is False and text_only["n_cold"] == 0
    assert with_codes["logloss"] != text_only["logloss"]


def test_eval_command_prints_one_json_line(tiny_llama_dir, split):
    result = CliRunner().invoke(
        llm_app, ["eval", "--model", str(tiny_llama_dir), "--split", str(split), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    metrics = json.loads(line)
    assert {"auc", "uauc", "logloss", "n", "n_cold"} <= set(metrics)
    assert metrics["n"] == 12


def test_export_command_prints_a_runnable_vllm_command(tiny_llama_dir, tmp_path):
    out = tmp_path / "served"
    result = CliRunner().invoke(llm_app, ["export", "--base", str(tiny_llama_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.stdout.strip().splitlines()[-1])
    assert argv[:3] == ["vllm", "serve", str(out)]
    assert (out / "binllm.json").is_file()


@dataclass(frozen=True)
class ScoredKnownOnly(KnownOnly):
    """KnownOnly with the codes' own score (as a `CodeBook` has): a click probability from the item id."""

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return 1.0 / (1.0 + np.exp(-(item_ids % 7 - 3.0))), np.zeros(len(item_ids), dtype=bool)


def test_eval_prints_the_codes_alone_and_a_paired_interval_of_the_difference(tiny_llama_dir, split):
    metrics = evaluate_split(tiny_llama_dir, split, codes=ScoredKnownOnly(), progress=False)
    assert {"auc", "uauc", "n"} <= set(metrics["codes_only"])
    for name in ("auc", "uauc"):
        interval = metrics["vs_codes"][name]
        assert interval["resamples"] == 1000 and interval["level"] == 0.95
        assert interval["low"] <= interval["diff"] <= interval["high"]
    assert metrics["vs_codes"]["auc"]["diff"] == pytest.approx(metrics["auc"] - metrics["codes_only"]["auc"])
    assert metrics["sample"].startswith("whole split") and "too few" in metrics["sample"]  # 12 rows


def test_a_subsampled_eval_says_it_is_a_sample(tiny_llama_dir, split):
    metrics = evaluate_split(tiny_llama_dir, split, max_samples=5, progress=False)
    assert metrics["sample"].startswith("sample of") and "not the whole split" in metrics["sample"]


def test_groups_cover_every_row_once_shortest_prefix_first() -> None:
    from model_store.llm.dataset import PromptSet
    from model_store.llm.evaluate import prefix_text_groups

    prefixes = ["a long prefix. ", "short. ", "a long prefix. ", "mid prefix. "]
    data = PromptSet(
        prompts=[prefix + f"item {k}?" for k, prefix in enumerate(prefixes)],
        prefixes=prefixes,
        labels=[0, 1, 0, 1],
        uids=[0, 1, 0, 2],
        iids=[0, 1, 2, 3],
    )
    groups, rows = prefix_text_groups(data)
    assert [prefix for prefix, _ in groups] == ["short. ", "mid prefix. ", "a long prefix. "]
    assert rows == [[1], [3], [0, 2]]
    assert [prefix + suffix for (prefix, suffixes) in groups for suffix in suffixes] == [
        data.prompts[row] for group_rows in rows for row in group_rows
    ]


def test_calls_hold_whole_groups_and_cover_every_group_once() -> None:
    from model_store.llm.evaluate import calls_of

    assert calls_of([3, 2, 5, 1], 5) == [range(0, 2), range(2, 3), range(3, 4)]
    assert calls_of([9], 4) == [range(0, 1)]
