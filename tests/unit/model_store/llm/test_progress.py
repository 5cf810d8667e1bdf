"""The tuning log's rate and ETA: measured from the end of the first step, so a trunk computed (or read) in
that step does not make a run that trains at 4 prompts/s read 0.06 prompts/s and an ETA of hundreds of hours."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from model_store.llm.progress import ThroughputLog, format_duration


@dataclass
class Steps:
    optimizer_steps: int = 0
    losses: list[float] = field(default_factory=list)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(log: ThroughputLog, state: Steps, clock: Clock, seconds: float, prompts: int, loss: float) -> None:
    clock.now += seconds
    state.optimizer_steps += 1
    state.losses.append(loss)
    log.step(state, prompts)


def test_the_first_steps_one_time_cost_is_left_out_of_the_rate_and_the_eta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock, state = Clock(), Steps()
    log = ThroughputLog(100, 2, label="stage 2", clock=clock)
    run(log, state, clock, 6_000.0, 16, 0.7)  # the trunk, computed inside the first step
    assert "rate and ETA after the next step" in log.line(state)
    run(log, state, clock, 4.0, 16, 0.5)  # then 4 prompts/s
    run(log, state, clock, 4.0, 16, 0.3)
    run(log, state, clock, 4.0, 16, 0.1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("stage 2 step 2/100: 4.00 prompts/s, loss 0.6000 (last 2 steps), ETA 6m32s")
    assert log.line(state) == "stage 2 step 4/100: 4.00 prompts/s, loss 0.2000 (last 2 steps), ETA 6m24s"


def test_validations_after_the_first_step_count_in_the_rate() -> None:
    clock, state = Clock(), Steps()
    log = ThroughputLog(10, 0, label="stage 1", clock=clock)
    run(log, state, clock, 1.0, 8, 0.7)
    run(log, state, clock, 1.0, 8, 0.7)
    run(log, state, clock, 3.0, 8, 0.7)  # a step followed by a validation
    assert log.line(state).startswith(
        "stage 1 step 3/10: 4.00 prompts/s, loss 0.7000 (last 1 steps), ETA 14s"
    )


def test_durations_read_as_hours_minutes_or_seconds() -> None:
    assert [format_duration(s) for s in (12, 245, 3_720)] == ["12s", "4m05s", "1h02m"]
