"""A scorer that answers at once with a deterministic pseudo-score; it exists ONLY for the benchmark.

`bench/service_overhead.py` measures what the service itself costs (HTTP, validation, the store round trip,
prompt rendering, JSON) without an LLM in the way. The score is a hash of the full prompt text mapped into
[0, 1), so it is stable across runs and processes but carries no meaning. Never a default backend.

    BINLLM_BACKEND=instant uvicorn app.main:app
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from app.scorers.base import PromptGroup

_SCALE = float(1 << 64)


def pseudo_score(prompt: str) -> float:
    """The first 8 bytes of blake2b(prompt) as a fraction of 2**64: in [0, 1), same prompt same score."""
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class InstantScorer:
    """Scorer that hashes prompts instead of running a model (benchmark only)."""

    name = "instant"

    async def start(self) -> None:
        """Nothing to start."""

    async def score(self, groups: Sequence[PromptGroup]) -> list[list[float]]:
        """One pseudo-score per prompt, in suffix order."""
        return [[pseudo_score(prompt) for prompt in group.prompts()] for group in groups]

    async def ready(self) -> bool:
        """Always ready."""
        return True

    async def aclose(self) -> None:
        """Nothing to release."""
