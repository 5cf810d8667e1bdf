"""The embedded demo: plausible, deterministic, learnable synthetic data; steps that skip work already done."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from model_store import demo
from model_store.contract.fusion import CodeScore
from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.data.io import read_split
from model_store.data.schema import FLAG_TEST, FLAG_TRAIN, FLAG_VALID
from model_store.demo import DemoPaths, ensure_data, ensure_published
from model_store.demo_data import DemoDataConfig, demo_titles, generate_raw, write_demo_data
from model_store.errors import BinllmJobError
from model_store.metrics import auc
from model_store.publish.directory import DirectoryPublisher

SMALL = DemoDataConfig(n_users=40, n_items=60, min_per_user=10, max_per_user=20)


@dataclass
class FakeCodes:
    """Codes for every id: enough to publish without training anything."""

    version: str = "codes-a"
    bits: int = 32

    def user_code(self, uid: int) -> int | None:
        return uid

    def item_code(self, iid: int) -> int | None:
        return iid

    def code_score(self) -> None:
        return None


def write_model_manifest(model_dir: Path, model_version: str, code_version: str = "codes-a") -> ModelManifest:
    manifest = ModelManifest(
        model_version=model_version,
        yes_token="Yes",
        no_token="No",
        yes_token_id=1,
        no_token_id=2,
        code_version=code_version,
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MANIFEST_FILENAME).write_text(manifest.model_dump_json())
    return manifest


def test_titles_are_distinct_and_look_like_films_with_a_year() -> None:
    titles = demo_titles(300, np.random.default_rng(0))
    assert len(set(titles)) == 300
    assert all(re.fullmatch(r"[A-Z][\w' ]+ \((19[3-9]\d|2000)\)", title) for title in titles)


def test_same_seed_gives_the_same_data_and_another_seed_does_not() -> None:
    a, b, c = generate_raw(SMALL), generate_raw(SMALL), generate_raw(SMALL.model_copy(update={"seed": 1}))
    assert np.array_equal(a.label, b.label) and list(a.item_titles) == list(b.item_titles)
    assert len(a.label) != len(c.label) or not np.array_equal(a.label, c.label)


def test_demo_splits_follow_the_split_format_with_cold_rows_later(tmp_path: Path) -> None:
    write_demo_data(SMALL, tmp_path)
    flags = {"train": FLAG_TRAIN, "valid": FLAG_VALID, "test": FLAG_TEST}
    for name, flag in flags.items():
        table = read_split(tmp_path / f"{name}.parquet")
        assert set(table["flag"].to_pylist()) == {flag}
    assert set(read_split(tmp_path / "train.parquet")["not_cold"].to_pylist()) == {1}
    assert 0 in read_split(tmp_path / "test.parquet")["not_cold"].to_pylist()  # late users or items
    assert (tmp_path / "items.parquet").is_file() and (tmp_path / "config.json").is_file()


def test_clicks_follow_hidden_tastes_so_a_rank_4_factorisation_predicts_valid_labels(tmp_path: Path) -> None:
    write_demo_data(DemoDataConfig(), tmp_path)
    train, valid = read_split(tmp_path / "train.parquet"), read_split(tmp_path / "valid.parquet")
    n = 1 + max(int(train["uid"].to_numpy().max()), int(valid["uid"].to_numpy().max()))
    m = 1 + max(int(train["iid"].to_numpy().max()), int(valid["iid"].to_numpy().max()))
    ratings = np.zeros((n, m))  # (users, items): +1 click, -1 no click, 0 unseen
    ratings[train["uid"].to_numpy(), train["iid"].to_numpy()] = 2 * train["label"].to_numpy() - 1
    u, s, vt = np.linalg.svd(ratings, full_matrices=False)
    predicted = (u[:, :4] * s[:4]) @ vt[:4]  # (users, items)
    warm = valid["not_cold"].to_numpy() == 1
    uid, iid = valid["uid"].to_numpy()[warm], valid["iid"].to_numpy()[warm]
    assert auc(valid["label"].to_numpy()[warm], predicted[uid, iid]) > 0.6


def test_data_step_skips_a_complete_directory(tmp_path: Path) -> None:
    paths = DemoPaths(root=tmp_path)
    assert ensure_data(paths, SMALL) is True
    before = (paths.data / "train.parquet").stat().st_mtime_ns
    assert ensure_data(paths, SMALL) is False
    assert (paths.data / "train.parquet").stat().st_mtime_ns == before


def test_publish_step_skips_when_the_active_snapshot_is_current_and_republishes_for_a_new_model(
    tmp_path: Path,
) -> None:
    paths = DemoPaths(root=tmp_path)
    ensure_data(paths, SMALL)
    publisher = DirectoryPublisher(paths.snapshot)
    codes = FakeCodes()
    model = write_model_manifest(paths.model, "model-1")
    first = ensure_published(publisher, paths, codes, model, keep=3)
    assert ensure_published(publisher, paths, codes, model, keep=3) == first
    assert publisher.versions() == [first]
    newer = write_model_manifest(paths.model, "model-2")
    second = ensure_published(publisher, paths, codes, newer, keep=3)
    assert second != first and publisher.versions() == [second, first]


class ScoredCodes(FakeCodes):
    """The same codes, now with their code score (what the service's fallback needs)."""

    def code_score(self) -> CodeScore:  # type: ignore[override]
        return CodeScore(bits=32, scale=0.1, bias=0.0, unknown_user_code=0, unknown_item_code=0)


def test_a_snapshot_published_without_the_code_score_is_republished_with_it(tmp_path: Path) -> None:
    paths = DemoPaths(root=tmp_path)
    ensure_data(paths, SMALL)
    publisher = DirectoryPublisher(paths.snapshot)
    model = write_model_manifest(paths.model, "model-1")
    old = ensure_published(publisher, paths, FakeCodes(), model, keep=3)
    new = ensure_published(publisher, paths, ScoredCodes(), model, keep=3)
    manifest = publisher.read_manifest(new)
    assert new != old and manifest is not None and manifest.code_score == ScoredCodes().code_score()
    assert ensure_published(publisher, paths, ScoredCodes(), model, keep=3) == new


def test_published_demo_snapshot_has_every_user_and_titled_item(tmp_path: Path) -> None:
    paths = DemoPaths(root=tmp_path)
    ensure_data(paths, SMALL)
    model = write_model_manifest(paths.model, "model-1")
    version = ensure_published(DirectoryPublisher(paths.snapshot), paths, FakeCodes(), model, keep=3)
    manifest = DirectoryPublisher(paths.snapshot).read_manifest(version)
    assert manifest is not None
    assert manifest.n_users == SMALL.n_users
    items = read_split(paths.data / "train.parquet")["iid"].to_pylist()
    assert manifest.n_items >= len(set(items))


def test_build_skips_every_step_on_a_second_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_codes(paths: DemoPaths, retrain: bool = False) -> FakeCodes:
        return FakeCodes()

    def fake_model(paths: DemoPaths, codes: FakeCodes) -> ModelManifest:
        if not (paths.model / MANIFEST_FILENAME).is_file():
            write_model_manifest(paths.model, "model-1")
        return ModelManifest.model_validate_json((paths.model / MANIFEST_FILENAME).read_text())

    monkeypatch.setattr(demo, "ensure_codes", fake_codes)
    monkeypatch.setattr(demo, "ensure_model", fake_model)
    first = demo.build_demo(tmp_path, data_config=SMALL, source="synthetic")
    data_mtime = (tmp_path / "data" / "train.parquet").stat().st_mtime_ns
    second = demo.build_demo(tmp_path, data_config=SMALL, source="synthetic")
    assert (tmp_path / "data" / "train.parquet").stat().st_mtime_ns == data_mtime
    assert first["directory_version"] == second["directory_version"]
    assert DirectoryPublisher(tmp_path / "snapshot").active_version() == first["directory_version"]


def test_auto_falls_back_to_the_synthetic_demo_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "ensure_codes", lambda paths, retrain=False: FakeCodes())

    def fake_model(paths: DemoPaths, codes: FakeCodes) -> ModelManifest:
        write_model_manifest(paths.model, "model-1")
        return ModelManifest.model_validate_json((paths.model / MANIFEST_FILENAME).read_text())

    monkeypatch.setattr(demo, "ensure_model", fake_model)
    result = demo.build_demo(tmp_path / "out", data_config=SMALL, ml1m_dir=tmp_path / "no-such-dir")
    assert result["flavour"] == "synthetic"
    assert "ML-1M splits not found" in result["why"] and "untuned synthetic demo" in result["why"]


def test_ml1m_source_refuses_when_its_inputs_are_missing(tmp_path: Path) -> None:
    with pytest.raises(BinllmJobError, match="ML-1M splits not found"):
        demo.build_demo(tmp_path, source="ml1m", ml1m_dir=tmp_path)
    for name in demo.ML1M_SPLITS:
        (tmp_path / name).write_bytes(b"")
    assert demo.ml1m_missing(tmp_path, shipped=tmp_path / "nothing") is not None
    assert "no tuned adapter" in str(demo.ml1m_missing(tmp_path, shipped=tmp_path / "nothing"))


def test_the_collm_demo_needs_its_shipped_adapter_and_the_ml1m_source(tmp_path: Path) -> None:
    for name in demo.ML1M_SPLITS:
        (tmp_path / name).write_bytes(b"")
    shipped = tmp_path / "shipped"
    (shipped / "adapter").mkdir(parents=True)
    (shipped / "adapter" / "adapter_config.json").write_text("{}")
    assert demo.ml1m_missing(tmp_path, shipped=shipped, encoding="codes") is None
    assert "adapter-collm" in str(demo.ml1m_missing(tmp_path, shipped=shipped, encoding="embeddings"))
    with pytest.raises(BinllmJobError, match="no tuned adapter shipped"):
        demo.build_demo(tmp_path / "out", ml1m_dir=tmp_path, shipped=shipped, encoding="embeddings")
    (shipped / "adapter-collm").mkdir()
    (shipped / "adapter-collm" / "adapter_config.json").write_text("{}")
    with pytest.raises(BinllmJobError, match="synthetic demo has no CoLLM model"):
        demo.build_demo(
            tmp_path / "out", source="synthetic", ml1m_dir=tmp_path, shipped=shipped, encoding="embeddings"
        )


def test_the_adapter_digest_covers_a_projector_in_its_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "projector").mkdir()
    (tmp_path / "adapter_model.safetensors").write_bytes(b"lora")
    (tmp_path / "projector" / "model.safetensors").write_bytes(b"one")
    before = demo.adapter_digest(tmp_path)
    (tmp_path / "projector" / "model.safetensors").write_bytes(b"two")
    assert demo.adapter_digest(tmp_path) != before
