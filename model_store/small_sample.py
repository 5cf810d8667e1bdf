"""When a figure comes from too small a sample to mean much, and the words that say so beside it.

An AUC from 32 rows moves by tenths between two seeds (the walkthrough's 32-row eval printed UAUC 1.0000, a
report's cold UAUC 0.0000); printed bare, it reads like a result. Every figure printed from fewer than
`MIN_SAMPLE` rows (for UAUC: users with both labels, the ones it averages over) carries `small_sample_note`.

    python -c "from model_store.small_sample import small_sample_note; print(small_sample_note(32))"
"""

from __future__ import annotations

MIN_SAMPLE = 200  # rows for AUC and logloss; users with both labels for UAUC


def is_small_sample(count: int) -> bool:
    """True when `count` rows (or users) are too few for a stable figure."""
    return count < MIN_SAMPLE


def small_sample_note(count: int, unit: str = "rows") -> str:
    """'(sample of 32 rows: too few for a stable figure)' below `MIN_SAMPLE`, else '' (nothing to add).

    `unit` names what was counted: "rows" for AUC and logloss, "users" for UAUC.
    """
    if not is_small_sample(count):
        return ""
    return f"(sample of {count} {unit}: too few for a stable figure)"
