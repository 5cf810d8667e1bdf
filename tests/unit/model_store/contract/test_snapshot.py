"""The snapshot contract: compact stored entries, item-id histories (old title histories still read), cluster URLs."""

from __future__ import annotations

import json

import pytest

from model_store.contract.prompts import MAX_HISTORY_TITLES
from model_store.contract.snapshot import (
    MAX_TITLE_CHARS,
    ItemEntry,
    UserEntry,
    cluster_seed_nodes,
    entry_json,
    split_cluster_url,
)


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


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://node-0:6379", ("redis://node-0:6379", [("node-0", 6379)])),
        ("redis://a:7001,b:7003", ("redis://a:7001", [("a", 7001), ("b", 7003)])),
        ("rediss://u:p@a:1, b:2/0?x=1", ("rediss://u:p@a:1/0?x=1", [("a", 1), ("b", 2)])),
        ("redis://[::1]:7000,c:3", ("redis://[::1]:7000", [("::1", 7000), ("c", 3)])),
    ],
)
def test_a_cluster_url_may_name_several_seed_nodes(
    url: str, expected: tuple[str, list[tuple[str, int]]]
) -> None:
    assert cluster_seed_nodes(url) == expected


@pytest.mark.parametrize("url", ["redis://a:7001,b", "redis://a:x", "redis://a:7001,:2", "redis://a:99999"])
def test_a_seed_node_without_a_port_is_refused_naming_it(url: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        cluster_seed_nodes(url)


def test_a_stored_user_keeps_only_the_history_the_prompt_can_show() -> None:
    """A 200,000-id history would make every request read 200,000 items; the prompt shows the last 10."""
    user = UserEntry.model_validate_json(json.dumps({"code": 1, "history": [str(i) for i in range(200_000)]}))
    assert user.history == [str(i) for i in range(200_000 - MAX_HISTORY_TITLES, 200_000)]
    old = UserEntry(history_titles=[f"t{i}" for i in range(50)])
    assert old.history_titles == [f"t{i}" for i in range(40, 50)]


def test_a_stored_title_is_cut_to_a_bound() -> None:
    item = ItemEntry.model_validate_json(json.dumps({"title": "x" * 1_000_000}))
    assert len(item.title) == MAX_TITLE_CHARS
    assert ItemEntry(title="Heat (1995)").title == "Heat (1995)"
