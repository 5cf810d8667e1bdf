"""Snapshot building: which history each user gets, which items exist, codes/model compatibility."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from model_store.contract.fusion import CodeScore
from model_store.contract.prompts import PromptStyle
from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.data.io import rows_to_table, write_split
from model_store.data.schema import FLAG_TEST, FLAG_TRAIN, FLAG_VALID
from model_store.errors import DataFormatError, PublishError
from model_store.publish import (
    build_snapshot,
    check_compatible,
    find_split_files,
    item_titles,
    latest_histories,
    snapshot_from_paths,
)


@dataclass
class FakeCodes:
    """A hand-made code book: codes for the listed ids, None for everything else."""

    users: dict[int, int] = field(default_factory=dict)
    items: dict[int, int] = field(default_factory=dict)
    bits: int = 32
    version: str = "codes-1"

    def user_code(self, uid: int) -> int | None:
        return self.users.get(uid)

    def item_code(self, iid: int) -> int | None:
        return self.items.get(iid)

    def code_score(self) -> None:
        return None


def row(uid: int, iid: int, label: int, ts: int, his: list[int], flag: int = FLAG_TRAIN) -> dict[str, Any]:
    return {
        "uid": uid,
        "iid": iid,
        "label": label,
        "timestamp": ts,
        "his": [0, *his],
        "his_title": ["", *(f"Movie {i} (1990)" for i in his)],
        "title": f"Movie {iid} (1990)",
        "flag": flag,
        "not_cold": 1,
    }


def model_manifest(code_version: str | None = "codes-1", bits: int = 32) -> ModelManifest:
    return ModelManifest(
        model_version="m1",
        prompt_style=PromptStyle(bits=bits),
        yes_token="Yes",
        no_token="No",
        yes_token_id=1,
        no_token_id=2,
        code_version=code_version,
    )


def test_history_is_the_latest_rows_history_plus_its_item_when_positive() -> None:
    table = rows_to_table(
        [
            row(1, 10, 1, 100, []),
            row(1, 11, 0, 200, [10]),
            row(1, 12, 1, 300, [10], flag=FLAG_VALID),
            row(2, 10, 0, 50, [11]),
        ]
    )
    histories = latest_histories(table)
    assert histories[1] == [10, 12]
    assert histories[2] == [11]  # latest row negative: its own item is not a positive


def test_history_keeps_the_ten_newest_items_newest_last() -> None:
    table = rows_to_table([row(1, 99, 1, 100, list(range(1, 15)))])
    assert latest_histories(table)[1] == [6, 7, 8, 9, 10, 11, 12, 13, 14, 99]


def test_history_ties_on_timestamp_go_to_the_later_split_then_the_later_row() -> None:
    table = rows_to_table(
        [
            row(1, 20, 1, 100, [], flag=FLAG_TEST),
            row(1, 21, 1, 100, [], flag=FLAG_VALID),
            row(1, 22, 1, 100, [5], flag=FLAG_TEST),
        ]
    )
    assert latest_histories(table)[1] == [5, 22]


def test_items_include_those_seen_only_in_histories_but_not_the_pad() -> None:
    table = rows_to_table([row(1, 10, 0, 100, [3, 4])])
    titles = item_titles(table)
    assert titles == {10: "Movie 10 (1990)", 3: "Movie 3 (1990)", 4: "Movie 4 (1990)"}


def test_snapshot_uses_string_ids_and_none_for_cold_codes() -> None:
    table = rows_to_table([row(1, 10, 1, 100, [3]), row(2, 11, 0, 100, [])])
    codes = FakeCodes(users={1: 7}, items={10: 5, 3: 9})
    snapshot = build_snapshot(codes, table, model_manifest(), version="v1")
    assert set(snapshot.users) == {"1", "2"}
    assert snapshot.users["1"].code == 7 and snapshot.users["2"].code is None
    assert snapshot.items["11"].code is None and snapshot.items["10"].code == 5
    assert snapshot.manifest.n_users == 2 and snapshot.manifest.n_items == 3
    assert snapshot.manifest.code_version == "codes-1"


def test_the_snapshot_carries_the_codes_own_score_for_the_services_fallback() -> None:
    score = CodeScore(bits=32, scale=0.2, bias=-0.1, unknown_user_code=5, unknown_item_code=6)

    class ScoredCodes(FakeCodes):
        def code_score(self) -> CodeScore:  # type: ignore[override]
            return score

    table = rows_to_table([row(1, 10, 1, 100, [3])])
    assert build_snapshot(ScoredCodes(), table, model_manifest(), version="v1").manifest.code_score == score
    assert build_snapshot(FakeCodes(), table, model_manifest(), version="v1").manifest.code_score is None


def test_a_users_history_is_item_ids_whose_titles_live_in_the_items() -> None:
    table = rows_to_table([row(1, 10, 1, 100, [3, 4])])
    snapshot = build_snapshot(FakeCodes(), table, model_manifest(), version="v1")
    user = snapshot.users["1"]
    assert user.history == ["3", "4", "10"] and user.history_titles == []
    assert [snapshot.items[i].title for i in user.history] == [
        "Movie 3 (1990)",
        "Movie 4 (1990)",
        "Movie 10 (1990)",
    ]


def test_snapshot_refuses_a_version_id_with_a_colon() -> None:
    table = rows_to_table([row(1, 10, 1, 100, [])])
    with pytest.raises(PublishError, match="invalid version id"):
        build_snapshot(FakeCodes(), table, model_manifest(), version="a:b")


def test_code_version_mismatch_is_refused_unless_allowed() -> None:
    codes = FakeCodes(version="codes-2")
    with pytest.raises(PublishError, match="allow-code-mismatch"):
        check_compatible(codes, model_manifest("codes-1"))
    check_compatible(codes, model_manifest("codes-1"), allow_code_mismatch=True)


def test_code_width_mismatch_is_refused() -> None:
    with pytest.raises(PublishError, match="16-bit"):
        check_compatible(FakeCodes(bits=32), model_manifest(bits=16))


def test_model_without_code_version_is_accepted() -> None:
    check_compatible(FakeCodes(), model_manifest(code_version=None))


def test_missing_model_manifest_names_the_path(tmp_path: Path) -> None:
    write_split(rows_to_table([row(1, 10, 1, 100, [])]), tmp_path / "data" / "train.parquet")
    with pytest.raises(PublishError, match=MANIFEST_FILENAME):
        snapshot_from_paths(FakeCodes(), [tmp_path / "data" / "train.parquet"], tmp_path / "model")


def test_malformed_model_manifest_is_a_data_format_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILENAME).write_text('{"model_version": 3}')
    with pytest.raises(DataFormatError, match=MANIFEST_FILENAME):
        snapshot_from_paths(FakeCodes(), [], tmp_path)


def test_split_files_are_found_by_name_and_the_catalogue_is_not_a_split(tmp_path: Path) -> None:
    table = rows_to_table([row(1, 10, 1, 100, [])])
    for name in ("train.parquet", "valid.parquet", "test.parquet", "items.parquet"):
        write_split(table, tmp_path / name)
    assert [p.name for p in find_split_files(tmp_path)] == ["test.parquet", "train.parquet", "valid.parquet"]


def test_empty_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="no split files"):
        find_split_files(tmp_path)


def test_catalogue_adds_items_without_rows(tmp_path: Path) -> None:
    write_split(rows_to_table([row(1, 10, 1, 100, [])]), tmp_path / "train.parquet")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / MANIFEST_FILENAME).write_text(model_manifest().model_dump_json())
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"iid": [10, 77], "title": ["Other name", "Lonely (1970)"]}), tmp_path / "items.parquet"
    )
    snapshot = snapshot_from_paths(
        FakeCodes(), [tmp_path / "train.parquet"], tmp_path / "model", catalogue=tmp_path / "items.parquet"
    )
    assert snapshot.items["77"].title == "Lonely (1970)"
    assert snapshot.items["10"].title == "Movie 10 (1990)"  # the split's own title wins
