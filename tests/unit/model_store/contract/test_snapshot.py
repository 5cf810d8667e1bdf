"""The snapshot contract: compact stored entries, item-id histories (old title histories still read), cluster URLs."""

from __future__ import annotations

import pytest

from model_store.contract.snapshot import ItemEntry, UserEntry, entry_json, split_cluster_url


def test_stored_entries_leave_defaults_out_and_read_back_equal() -> None:
    user = UserEntry(code=5, history=["3", "10"])
    assert entry_json(user) == '{"code":5,"history":["3","10"]}'
    assert UserEntry.model_validate_json(entry_json(user)) == user
    cold = ItemEntry(title="Heat (1995)")
    assert entry_json(cold) == '{"title":"Heat (1995)"}'
    assert ItemEntry.model_validate_json(entry_json(cold)) == cold


def test_a_user_published_with_titles_still_reads() -> None:
    old = UserEntry.model_validate_json('{"code": 1, "history_titles": ["Heat (1995)"]}')
    assert old.history == [] and old.history_titles == ["Heat (1995)"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://node-0:6379", ("redis://node-0:6379", True)),
        ("rediss+cluster://u:p@node-0:6380", ("rediss://u:p@node-0:6380", True)),
        ("REDIS+CLUSTER://node-0:6379", ("redis://node-0:6379", True)),
        ("redis://localhost:6379/0", ("redis://localhost:6379/0", False)),
        ("unix:///tmp/redis.sock", ("unix:///tmp/redis.sock", False)),
    ],
)
def test_a_cluster_url_is_a_plain_url_plus_a_flag(url: str, expected: tuple[str, bool]) -> None:
    assert split_cluster_url(url) == expected
