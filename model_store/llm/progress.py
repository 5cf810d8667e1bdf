"""Progress of a long tuning run as plain log lines: prompts/s, ETA and the recent loss.

A run over every ML-1M train row takes hours on a CPU and is read from a log file (tqdm bars are off with
`--no-progress`, and a bar's carriage returns make a poor log), so every `log_every` optimizer steps one line
says how fast it goes and when the stage will end.

    binllm llm tune ... --no-progress --log-every 50 2>&1 | tee tune.log
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from tqdm.auto import tqdm


class _Steps(Protocol):
    optimizer_steps: int
    losses: list[float]


class ThroughputLog:
    """Counts prompts between log lines; the rate is measured from the end of this process's first step.

    The first step of a process pays one-time costs: the frozen trunk over every train row (hours on a CPU,
    or a read from `--trunk-cache-dir`), thread pools, kernels. Counted in, they would make the rate read
    ~0.1 prompts/s and the ETA hundreds of hours right after the trunk; so the clock starts when that step
    ends, and the first step's prompts are not counted. Later validations stay in: every stage pays them
    again, so the ETA should too.
    """

    def __init__(
        self, total_steps: int, every: int, *, label: str, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.total_steps, self.every, self.label = total_steps, every, label
        self.clock = clock
        self.started: float | None = None  # end of this process's first step
        self.prompts = 0  # prompts of the steps since then
        self.steps = 0

    def step(self, state: _Steps, prompts: int) -> None:
        """Record one optimizer step of `prompts` prompts; print a line every `every` steps."""
        if self.started is None:
            self.started = self.clock()
        else:
            self.prompts += prompts
            self.steps += 1
        if not self.every or state.optimizer_steps % self.every:
            return
        tqdm.write(self.line(state))

    def line(self, state: _Steps) -> str:
        """The log line for `state`: rate and ETA once a step has been timed, the recent loss always."""
        recent = state.losses[-self.every :] if self.every else state.losses[-1:]
        loss = f"loss {sum(recent) / len(recent):.4f} (last {len(recent)} steps)" if recent else "no loss yet"
        head = f"{self.label} step {state.optimizer_steps}/{self.total_steps}"
        elapsed = self.clock() - self.started if self.started is not None else 0.0
        if not self.steps or elapsed <= 0:
            return f"{head}: {loss}, rate and ETA after the next step (the first pays one-time costs)"
        left = max(0, self.total_steps - state.optimizer_steps) * elapsed / self.steps
        return f"{head}: {self.prompts / elapsed:.2f} prompts/s, {loss}, ETA {format_duration(left)}"


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
