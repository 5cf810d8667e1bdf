"""The counts the failure-path ("chaos") tests measure, printed at the end of every pytest run, -s or not.

report("redis down: {503: 10}")      # in a test; the summary section "chaos counts" lists every line
"""

from __future__ import annotations

LINES: list[str] = []


def report(line: str) -> None:
    """Print `line` now and keep it for the run's summary."""
    print(f"\n{line}")
    LINES.append(line)
