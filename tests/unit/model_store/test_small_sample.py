"""`model_store.small_sample`: the note beside a figure from too few rows or users, and none from enough."""

from __future__ import annotations

from model_store.small_sample import MIN_SAMPLE, is_small_sample, small_sample_note


def test_a_figure_from_32_rows_is_noted_as_too_few() -> None:
    assert small_sample_note(32) == "(sample of 32 rows: too few for a stable figure)"
    assert small_sample_note(0, "users") == "(sample of 0 users: too few for a stable figure)"


def test_from_200_rows_on_there_is_nothing_to_add() -> None:
    assert MIN_SAMPLE == 200
    assert small_sample_note(199, "users") == "(sample of 199 users: too few for a stable figure)"
    assert small_sample_note(200) == "" and small_sample_note(10_401) == ""
    assert is_small_sample(199) and not is_small_sample(200)
