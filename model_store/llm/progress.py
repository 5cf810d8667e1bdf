"""Progress of a long tuning run as plain log lines: prompts/s, ETA and the recent loss.

A run over every ML-1M train row takes hours on a CPU and is read from a log file (tqdm bars are off with
`--no-progress`, and a bar's carriage returns make a poor log), so every `log_every` optimizer steps one line
says how fast it goes and when the stage will end.

    binllm llm tune ... --no-progress --log-every 50 2>&1 | tee tune.log
"""

from __future__ import annotations

import time
from typing import Protocol

from tqdm.auto import tqdm


class _Steps(Protocol):
    optimizer_steps: int
    losses: list[float]


class ThroughputLog:
    """Counts prompts between log lines; the rate is measured since this process started the stage."""

    def __init__(self, total_steps: int, every: int, *, label: str) -> None:
        self.total_steps, self.every, self.label = total_steps, every, label
        self.started = time.perf_counter()
        self.prompts = 0
        self.steps = 0

    def step(self, state: _Steps, prompts: int) -> None:
        """Record one optimizer step of `prompts` prompts; print a line every `every` steps."""
        self.prompts += prompts
        self.steps += 1
        if not self.every or state.optimizer_steps % self.every:
            return
        elapsed = time.perf_counter() - self.started
        rate = self.prompts / elapsed if elapsed > 0 else 0.0
        seconds_per_step = elapsed / self.steps
        left = max(0, self.total_steps - state.optimizer_steps) * seconds_per_step
        recent = state.losses[-self.every :]
        tqdm.write(
            f"{self.label} step {state.optimizer_steps}/{self.total_steps}: {rate:.2f} prompts/s, "
            f"loss {sum(recent) / len(recent):.4f} (last {len(recent)} steps), ETA {format_duration(left)}"
        )


def format_duration(seconds: float) -> str:
    """'1h02m' / '4m05s' / '12s'."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
