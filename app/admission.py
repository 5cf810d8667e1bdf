"""Load shedding: a cap on the candidates queued or being scored in this process, counted per candidate.

A request is admitted when its candidates fit under `BINLLM_MAX_QUEUED_CANDIDATES` together with everything
already admitted, and refused at once with 503 + Retry-After (`OverloadedError`) otherwise, before any store
or model work; a request larger than the cap is admitted only into an idle process, so every legal request
can be served eventually. Counting candidates rather than requests keeps one 256-candidate request from
looking as cheap as a 1-candidate one.

    BINLLM_MAX_QUEUED_CANDIDATES=512 uvicorn app.main:app
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app import metrics
from app.errors import OverloadedError


class Admission:
    """Counts admitted candidates; `admit(n)` holds n of them for the duration of a request."""

    def __init__(self, max_candidates: int | None) -> None:
        self.max_candidates = max_candidates
        self.in_flight = 0

    @contextmanager
    def admit(self, n: int) -> Iterator[None]:
        """Hold `n` candidates, or raise OverloadedError when they do not fit."""
        cap = self.max_candidates
        if cap is not None and self.in_flight > 0 and self.in_flight + n > cap:
            metrics.SHED.inc()
            raise OverloadedError(
                f"{self.in_flight} candidates already queued; at most {cap} are; retry shortly"
            )
        self.in_flight += n
        metrics.QUEUED_CANDIDATES.set(self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= n
            metrics.QUEUED_CANDIDATES.set(self.in_flight)
