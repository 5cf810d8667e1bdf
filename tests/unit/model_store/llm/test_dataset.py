"""Split rows become exactly the contract's prompt strings, with codes only where both ids have one."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from model_store.contract.prompts import CandidateItem, PromptStyle, UserContext, render_prompt
from model_store.data.io import rows_to_table
from model_store.llm.dataset import build_prompts, subsample_indices


@dataclass
class FakeCodes:
    users: dict[int, int] = field(default_factory=dict)
    items: dict[int, int] = field(default_factory=dict)
    bits: int = 32
    version: str = "codes-test"

    def user_code(self, uid: int) -> int | None:
        return self.users.get(uid)

    def item_code(self, iid: int) -> int | None:
        return self.items.get(iid)


def _row(uid: int, iid: int, label: int, history: list[str], title: str) -> dict[str, object]:
    return {
        "uid": uid,
        "iid": iid,
        "label": label,
        "timestamp": 1000 + iid,
        "his": list(range(len(history))),
        "his_title": history,
        "title": title,
        "flag": -1,
        "not_cold": 1,
    }


def _table() -> object:
    return rows_to_table(
        [
            _row(1, 10, 1, ["", "Heat (1995)", "Ran (1985)"], "Alien (1979)"),
            _row(2, 20, 0, ["", "Up (2009)"], "Jaws (1975)"),
            _row(1, 30, 0, ["", "Heat (1995)"], "Big (1988)"),
        ]
    )


def test_text_only_prompt_is_the_contract_rendering_without_the_pad():
    data = build_prompts(_table())
    expected = render_prompt(
        UserContext(history_titles=("Heat (1995)", "Ran (1985)")),
        CandidateItem(title="Alien (1979)"),
        PromptStyle(),
        with_codes=False,
    )
    assert data.prompts[0] == expected
    assert '""' not in data.prompts[0]
    assert data.labels == [1, 0, 0]
    assert data.uids == [1, 2, 1]
    assert data.iids == [10, 20, 30]
    assert data.n_cold == 0


def test_prompt_with_codes_renders_both_codes_through_the_contract():
    codes = FakeCodes(users={1: 5, 2: 6}, items={10: 7, 20: 8, 30: 9})
    data = build_prompts(_table(), codes=codes)
    expected = render_prompt(
        UserContext(history_titles=("Up (2009)",), code=6),
        CandidateItem(title="Jaws (1975)", code=8),
        PromptStyle(),
        with_codes=True,
    )
    assert data.prompts[1] == expected
    assert format(6, "032b") in data.prompts[1]
    assert data.n_cold == 0


def test_row_with_unknown_user_or_item_gets_text_only_wording_and_counts_as_cold():
    codes = FakeCodes(users={1: 5}, items={10: 7, 20: 8})  # user 2 and item 30 unknown
    data = build_prompts(_table(), codes=codes)
    assert format(5, "032b") in data.prompts[0]
    for cold in (1, 2):
        assert "feature" not in data.prompts[cold]
        assert "Leverage the information" in data.prompts[cold]
    assert data.n_cold == 2


def test_history_keeps_only_the_last_ten_titles():
    history = ["", *[f"Film {n} (2000)" for n in range(12)]]
    data = build_prompts(rows_to_table([_row(1, 1, 1, history, "Target (2001)")]))
    assert '"Film 1 (2000)"' not in data.prompts[0]
    assert '"Film 2 (2000)", ' in data.prompts[0]
    assert '"Film 11 (2000)"' in data.prompts[0]


def test_codebook_width_sets_the_code_width_in_prompts():
    codes = FakeCodes(users={1: 3, 2: 3}, items={10: 1, 20: 1, 30: 1}, bits=16)
    data = build_prompts(_table(), codes=codes)
    assert f" {format(3, '016b')}. " in data.prompts[0]
    assert format(3, "032b") not in data.prompts[0]


def test_subsample_is_deterministic_by_seed_in_file_order():
    first = subsample_indices(1000, 50, seed=3)
    assert list(first) == list(subsample_indices(1000, 50, seed=3))
    assert list(first) == sorted(first)
    assert len(set(first.tolist())) == 50
    assert list(first) != list(subsample_indices(1000, 50, seed=4))
    assert list(subsample_indices(10, None, seed=0)) == list(range(10))
    assert list(subsample_indices(10, 99, seed=0)) == list(range(10))


def test_max_samples_keeps_prompts_labels_and_users_aligned():
    full = build_prompts(_table())
    sub = build_prompts(_table(), max_samples=2, seed=1)
    assert len(sub) == 2
    for prompt, label, uid in zip(sub.prompts, sub.labels, sub.uids, strict=True):
        index = full.prompts.index(prompt)
        assert (full.labels[index], full.uids[index]) == (label, uid)


def test_non_positive_max_samples_is_refused():
    with pytest.raises(ValueError):
        subsample_indices(10, 0, seed=0)


@dataclass
class FakeCodesWithUnknown(FakeCodes):
    unknown_user_code: int = 0xAAAAAAAA
    unknown_item_code: int = 0x55555555


def test_learned_unknown_codes_keep_the_binllm_wording_for_a_row_missing_a_code():
    codes = FakeCodesWithUnknown(users={1: 7, 2: 8}, items={10: 1, 20: 2})  # item 30 is cold
    style = PromptStyle(layout="serving", code_mode="hex", unknown_codes="learned")
    data = build_prompts(_table(), codes=codes, style=style)
    cold_row = render_prompt(
        UserContext(history_titles=("Heat (1995)",), code=7),
        CandidateItem(title="Big (1988)", code=codes.unknown_item_code),
        style,
        with_codes=True,
    )
    assert data.prompts[2] == cold_row
    assert data.n_cold == 1  # still counted: the item has no code of its own
    text_only = build_prompts(
        _table(), codes=codes, style=style.model_copy(update={"unknown_codes": "text_only"})
    )
    assert "55555555" not in text_only.prompts[2] and text_only.n_cold == 1


def test_unknown_item_share_hides_a_seeded_share_of_item_codes_and_needs_the_learned_style():
    rows = [_row(u, 100 + u, u % 2, ["Heat (1995)"], f"Film {u}") for u in range(200)]
    codes = FakeCodesWithUnknown(
        users={u: u + 1 for u in range(200)}, items={100 + u: u + 1 for u in range(200)}
    )
    style = PromptStyle(layout="serving", code_mode="hex", unknown_codes="learned")
    table = rows_to_table(rows)
    hidden = build_prompts(table, codes=codes, style=style, unknown_item_share=0.3, seed=5)
    again = build_prompts(table, codes=codes, style=style, unknown_item_share=0.3, seed=5)
    assert hidden.prompts == again.prompts
    n_hidden = sum("55555555" in prompt for prompt in hidden.prompts)
    assert 40 <= n_hidden <= 80 and hidden.n_cold == n_hidden
    assert all("55555555" not in p for p in build_prompts(table, codes=codes, style=style).prompts)
    with pytest.raises(ValueError, match="learned"):
        build_prompts(table, codes=codes, style=PromptStyle(), unknown_item_share=0.3)
