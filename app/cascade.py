"""The cascade under the deadline: the codes score every candidate, the LLM the best of them that fit in time.

BinMF codes score a candidate in microseconds (`contract/fusion.py: CodeScore`, published with the snapshot);
the LLM costs tens of milliseconds per candidate on a CPU. So a request is answered in two tiers: every
candidate gets its code score at once, then the LLM scores candidates in order of that code score, best first,
chunk by chunk, as long as the next chunk is expected to finish before the request's deadline. How long a chunk
takes is estimated from measured throughput (`ThroughputMeter`: this request's own chunks once it has some,
else the process's recent calls), and only `safety` of the time left is planned for. A chunk still running at
the deadline is dropped; whatever the LLM scored before stays. The rest keep their code score.

Every item says which score it got (`score_kind` per item). Two scales never mix in one ranking:

* the model declares a blend (`fusion` in its manifest): LLM-scored items get the blend, a calibrated click
  probability; codes-only items get the codes' own probability, also calibrated on the same labels: one scale;
* no blend (`score` = raw P(Yes)): the LLM-scored items are the head of the codes' ranking, reranked by the
  LLM. Each codes-only item's `score` is its code probability times the lowest LLM-scored item's score, so every
  codes-only item ranks below every LLM-scored one, the LLM orders the head, the codes order the tail, and
  sorting by `score` gives exactly that list.

    python -c "from app.cascade import llm_budget; print(llm_budget(256, 2.0, 100.0, 0.75))"   # 150
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from app.scorers.base import PromptGroup


@dataclass
class ThroughputMeter:
    """Candidates per second the backend delivered over its last `window` calls, queueing included.

    Measured as the service sees it (wall time of each scoring call, from the request's side), so under
    concurrent load it is the rate one request gets, not the model's rate alone.
    """

    window: int = 32
    _calls: deque[tuple[int, float]] = field(default_factory=deque)

    def record(self, candidates: int, seconds: float) -> None:
        """One finished scoring call of `candidates` that took `seconds`."""
        self._calls.append((candidates, max(seconds, 1e-6)))
        while len(self._calls) > self.window:
            self._calls.popleft()

    def rate(self) -> float | None:
        """Candidates per second over the window; None before any call."""
        if not self._calls:
            return None
        return sum(n for n, _ in self._calls) / sum(s for _, s in self._calls)


def llm_budget(remaining: int, time_left_s: float | None, rate: float | None, safety: float) -> int:
    """How many of `remaining` candidates the LLM may score next: all of them when there is no deadline or no
    measurement yet, else what `rate` scores in `safety` of the time left (0 when none fits)."""
    if time_left_s is None or rate is None:
        return remaining
    if time_left_s <= 0:
        return 0
    return max(0, min(remaining, math.floor(rate * time_left_s * safety)))


def cascade_order(code_scores: dict[str, float]) -> list[str]:
    """Distinct candidates, best code score first (ties keep request order)."""
    ids = list(code_scores)
    return sorted(ids, key=lambda item_id: -code_scores[item_id])


def chunk_groups_of(
    item_ids: Sequence[str],
    slots: dict[str, tuple[int, int]],
    groups: Sequence[PromptGroup],
) -> list[PromptGroup]:
    """The prompt groups that score exactly `item_ids` (one group per wording they use, prefixes shared)."""
    picked: dict[int, list[str]] = {}
    for item_id in item_ids:
        g, k = slots[item_id]
        picked.setdefault(g, []).append(groups[g].suffixes[k])
    return [replace_suffixes(groups[g], suffixes) for g, suffixes in sorted(picked.items())]


def replace_suffixes(group: PromptGroup, suffixes: Iterable[str]) -> PromptGroup:
    """`group` with other suffixes (same prefix and route)."""
    return PromptGroup(prefix=group.prefix, suffixes=tuple(suffixes), route=group.route)


def split_by_group(item_ids: Sequence[str], slots: dict[str, tuple[int, int]]) -> list[str]:
    """`item_ids` in the order `chunk_groups_of` lays their scores out (group by group, order kept within)."""
    return sorted(item_ids, key=lambda item_id: slots[item_id][0])


def codes_below(code_p: float, lowest_llm_score: float) -> float:
    """A codes-only item's `score` in a partial answer without a blend: below every LLM-scored item."""
    return code_p * lowest_llm_score


async def score_head(
    order: Sequence[str],
    slots: dict[str, tuple[int, int]],
    groups: Sequence[PromptGroup],
    score: Callable[[list[PromptGroup]], Awaitable[list[list[float]]]],
    *,
    chunk: int | None,
    deadline: float | None,
    meter: ThroughputMeter,
    safety: float,
) -> dict[str, float]:
    """P(Yes) of the candidates in `order` the LLM scores in time: chunk by chunk from the front, while the
    next chunk is expected to fit in `safety` of the time left before `deadline` (loop time). A chunk still
    running at the deadline is dropped. Errors of `score` propagate."""
    loop = asyncio.get_running_loop()
    scored: dict[str, float] = {}
    own_candidates, own_seconds = 0, 0.0
    step = chunk or max(len(order), 1)
    while len(scored) < len(order):
        time_left = None if deadline is None else deadline - loop.time()
        rate = own_candidates / own_seconds if own_seconds > 0 else meter.rate()
        n = min(step, llm_budget(len(order) - len(scored), time_left, rate, safety))
        if n == 0:
            break
        ids = split_by_group(order[len(scored) : len(scored) + n], slots)
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                result = await score(chunk_groups_of(ids, slots, groups))
        except TimeoutError:
            break
        seconds = time.perf_counter() - started
        meter.record(n, seconds)
        own_candidates, own_seconds = own_candidates + n, own_seconds + seconds
        scored.update(zip(ids, (p for group in result for p in group), strict=True))
    return scored
