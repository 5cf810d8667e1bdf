"""The paired bootstrap of AUC/UAUC differences, on hand-worked rows (two users with two rows each)."""

from __future__ import annotations

import pytest

from model_store.paired_bootstrap import interval_excludes, intervals_as_dict, paired_bootstrap

USERS = [1, 1, 2, 2, 3]
LABELS = [1, 0, 1, 0, 1]  # user 3 has one label: counted in AUC, skipped in UAUC
A = [0.9, 0.1, 0.2, 0.8, 0.5]  # user 2 ranked backwards
B = [0.9, 0.1, 0.8, 0.2, 0.5]  # both users ranked right


def test_the_differences_are_b_minus_a_on_all_rows() -> None:
    result = paired_bootstrap(USERS, LABELS, A, B, resamples=200, seed=0)
    # A: positives {0.9, 0.2, 0.5} vs negatives {0.1, 0.8}: 4 of 6 pairs right; B: 6 of 6
    assert result["auc"].diff == pytest.approx(1.0 - 4 / 6)
    assert result["uauc"].diff == pytest.approx((1 + 1) / 2 - (1 + 0) / 2)  # user 3 skipped
    for interval in result.values():
        assert interval.low <= interval.diff <= interval.high and interval.level == 0.95
    # a resample holds users 1 and 2 in some multiplicity: UAUC gains between 0 (only user 1) and 1 (only 2)
    assert 0.0 <= result["uauc"].low < result["uauc"].high <= 1.0


def test_identical_scores_give_a_zero_width_interval_and_the_same_seed_the_same_draws() -> None:
    same = paired_bootstrap(USERS, LABELS, A, A, resamples=50, seed=3)
    assert all((i.diff, i.low, i.high) == (0.0, 0.0, 0.0) for i in same.values())
    assert paired_bootstrap(USERS, LABELS, A, B, resamples=50, seed=3) == paired_bootstrap(
        USERS, LABELS, A, B, resamples=50, seed=3
    )


def test_a_loss_counts_only_when_the_whole_interval_is_below_the_bar() -> None:
    users = [u for u in range(20) for _ in range(2)]
    labels = [1, 0] * 20
    right = [0.6 + u / 100 if y else 0.4 - u / 100 for u, y in zip(users, labels, strict=True)]
    backwards = [1.0 - s for s in right]  # every user ranked backwards: a loss in every resample
    loss = paired_bootstrap(users, labels, right, backwards, resamples=200, seed=0)
    assert loss["uauc"].low == loss["uauc"].high == -1.0
    assert loss["auc"].high < -0.5 and interval_excludes(loss["auc"], 0.002)
    gain = paired_bootstrap(USERS, LABELS, A, B, resamples=200, seed=0)["auc"]
    assert not interval_excludes(gain, 0.002)
    flat = intervals_as_dict({"auc": gain}, prefix="jitter_")
    assert flat == {"jitter_d_auc": gain.diff, "jitter_d_auc_ci": [gain.low, gain.high]}


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per row"):
        paired_bootstrap(USERS, LABELS, A, B[:-1])
