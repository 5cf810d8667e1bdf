"""`binllm llm eval` scores every row as `/predict` returns it: same model load, prompts, blend, cold rule.

One servable tiny random Llama with a blend in its `binllm.json`, one codebook, one split whose users and
items the codes partly miss (so warm and cold rows both occur). The eval's code path (`score_split`, what the
command prints) and the real app (`create_app` with the in-process model over a directory snapshot of the same
catalogue, one `/predict` per (user, history) with the row's history ids) must give the same `score` and
`p_yes` per row. fp32 pins the equality (the two batch rows differently: only float rounding may differ);
bf16 has its own test with a bf16-sized tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.main import create_app
from app.schemas import PredictResponse
from app.settings import LocalSettings, ServiceSettings
from model_store.codes.codebook import CodeBook
from model_store.contract.fusion import ScoreFusion
from model_store.contract.snapshot import (
    MANIFEST_FILENAME,
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UserEntry,
)
from model_store.data.io import rows_to_table, write_split
from model_store.llm.commands import llm_app
from model_store.llm.evaluate import SplitScores, score_split
from model_store.publish import Snapshot
from model_store.publish.directory import DirectoryPublisher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CODED_USERS, CODED_ITEMS = range(3), range(10, 20)  # users 3, 4 and items 90, 91 have no code
HISTORY = {200 + k: f"Old film {k} ({1980 + k})" for k in range(6)}


@dataclass(frozen=True)
class Fixture:
    model: Path
    split: Path
    snapshot: Path
    book: CodeBook
    histories: dict[
        tuple[int, tuple[int, ...]], list[int]
    ]  # (user, history ids) -> candidate items, in order


def _book() -> CodeBook:
    rng = np.random.default_rng(3)
    return CodeBook(
        bits=32,
        user_ids=np.array(CODED_USERS, dtype=np.int64),
        user_codes=rng.integers(0, 2**32, len(CODED_USERS)).astype(np.uint64),
        item_ids=np.array(CODED_ITEMS, dtype=np.int64),
        item_codes=rng.integers(0, 2**32, len(CODED_ITEMS)).astype(np.uint64),
        unknown_user_code=0xAAAAAAAA,
        unknown_item_code=0x55555555,
        scale=0.05,
        bias=0.1,
    )


def _rows() -> list[dict[str, object]]:
    """Users 0..4, one or two histories each, six candidates per history (two of them without codes)."""
    rows: list[dict[str, object]] = []
    for uid in range(5):
        for variant in range(1 + uid % 2):
            his = [0, *sorted(HISTORY)[variant + uid % 3 : variant + uid % 3 + 3]]  # 0 = the split's pad
            for n, iid in enumerate([10 + uid, 11 + uid, 13 + uid, 18 + variant, 90, 91]):
                rows.append(
                    {
                        "uid": uid,
                        "iid": iid,
                        "label": (uid + n + variant) % 2,
                        "timestamp": len(rows),
                        "his": his,
                        "his_title": ["" if h == 0 else HISTORY[h] for h in his],
                        "title": f"Film {iid} ({1990 + iid % 10})",
                        "flag": 0,
                        "not_cold": int(uid in CODED_USERS and iid in CODED_ITEMS),
                    }
                )
    return rows


@pytest.fixture(scope="module")
def catalogue(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    root = tmp_path_factory.mktemp("eval-vs-service")
    book = _book()
    model = root / "served"
    result = CliRunner().invoke(
        llm_app,
        ["export", "--base", str(tiny_llama_dir), "--out", str(model), "--with-codes", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    manifest_path = model / MANIFEST_FILENAME
    fusion = ScoreFusion(
        codes=book.code_score(), warm=(0.8, 0.6, 0.1), cold=(1.2, 0.3, -0.2), fitted_on="test"
    )
    manifest = ModelManifest.model_validate_json(manifest_path.read_text()).model_copy(
        update={"with_codes": True, "fusion": fusion, "code_version": book.version}
    )
    manifest_path.write_text(manifest.model_dump_json())
    rows = _rows()
    split = write_split(rows_to_table(rows), root / "valid.parquet")
    users = {str(u): UserEntry(code=book.user_code(u)) for u in range(5)}
    items = {
        str(i): ItemEntry(code=book.item_code(i), title=f"Film {i} ({1990 + i % 10})")
        for i in [*range(10, 20), 90, 91]
    }
    items.update({str(h): ItemEntry(code=None, title=title) for h, title in HISTORY.items()})
    snapshot = SnapshotManifest(
        version="v1",
        code_version=book.version,
        model=manifest,
        n_users=len(users),
        n_items=len(items),
        created_at="2025-01-01T00:00:00+00:00",
        code_score=book.code_score(),
    )
    DirectoryPublisher(root / "snapshots").publish(Snapshot(manifest=snapshot, users=users, items=items))
    histories: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for row in rows:
        his = tuple(h for h in row["his"] if h)
        histories.setdefault((int(row["uid"]), his), []).append(int(row["iid"]))
    return Fixture(model, split, root / "snapshots", book, histories)


def _served(
    catalogue: Fixture, dtype: str
) -> dict[tuple[int, tuple[int, ...], int], tuple[float, float | None, str, bool]]:
    """(user, history, item) -> (score, p_yes, score_kind, cold) from the app's /predict, one call per history."""
    settings = ServiceSettings(
        backend="local",
        store="directory",
        snapshot_dir=catalogue.snapshot,
        local=LocalSettings(model_dir=catalogue.model, dtype=dtype, threads=1),
    )
    out = {}
    with TestClient(create_app(settings)) as client:
        for _ in range(
            3000
        ):  # the model loads and runs its warm-up scoring in the background (slow when busy)
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        for (uid, his), candidates in catalogue.histories.items():
            body = {
                "user_id": str(uid),
                "item_ids": [str(i) for i in candidates],
                "history_item_ids": [str(h) for h in his],
            }
            response = client.post("/predict", json=body)
            assert response.status_code == 200, response.text
            parsed = PredictResponse.model_validate(response.json())
            for item in parsed.scores:
                cold = item.item_id in parsed.cold
                out[uid, his, int(item.item_id)] = (item.score, item.p_yes, item.score_kind, cold)
    return out


def _compare(catalogue: Fixture, scored: SplitScores, served: dict, *, tolerance: float) -> None:
    data = scored.data
    assert len(served) == len(data) == 42
    rows = _rows()
    for row, kept in enumerate(data.rows or []):
        his = tuple(h for h in rows[kept]["his"] if h)
        score, p_yes, kind, cold = served[data.uids[row], his, data.iids[row]]
        assert kind == "blend" and p_yes is not None
        assert cold == (not scored.warm[row])  # the blend's warm weights on the same rows
        assert p_yes == pytest.approx(scored.p_yes[row], abs=tolerance)
        assert score == pytest.approx(scored.score[row], abs=tolerance)


def test_eval_prints_per_row_what_predict_returns_in_fp32(catalogue: Fixture) -> None:
    scored = score_split(
        catalogue.model, catalogue.split, codes=catalogue.book, dtype="float32", progress=False
    )
    assert scored.metrics["score"] == "blend" and scored.metrics["dtype"] == "float32"
    assert 0 < scored.warm.sum() < len(scored.warm)  # both weight triples are exercised
    assert np.ptp(scored.p_yes) > 1e-3 and np.abs(scored.score - scored.p_yes).max() > 1e-3  # a real blend
    _compare(catalogue, scored, _served(catalogue, "float32"), tolerance=1e-5)


def test_eval_in_bf16_scores_as_the_service_in_bf16(catalogue: Fixture) -> None:
    """bf16 weights on both sides: close to each other (the two batch rows apart), and not fp32's numbers."""
    scored = score_split(
        catalogue.model, catalogue.split, codes=catalogue.book, dtype="bfloat16", progress=False
    )
    fp32 = score_split(
        catalogue.model, catalogue.split, codes=catalogue.book, dtype="float32", progress=False
    )
    assert scored.metrics["dtype"] == "bfloat16"
    assert np.abs(scored.p_yes - fp32.p_yes).max() > 1e-5  # really computed in bf16
    _compare(catalogue, scored, _served(catalogue, "bfloat16"), tolerance=0.02)


def test_eval_defaults_to_the_service_dtype_and_refuses_others(catalogue: Fixture) -> None:
    from model_store.llm.commands import _served_dtype

    assert _served_dtype(None) == LocalSettings().dtype
    assert _served_dtype("bfloat16") == "bfloat16"
    result = CliRunner().invoke(
        llm_app, ["eval", "--model", str(catalogue.model), "--split", str(catalogue.split), "--dtype", "fp16"]
    )
    assert result.exit_code == 2 and "auto, float32, bfloat16" in result.output
