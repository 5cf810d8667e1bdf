"""The one interface every scoring backend implements (vLLM over HTTP, in-process model, instant).

The service hands a backend prompts already split into groups that share a prefix (one group per prompt
wording for the request's user); each backend decides how to exploit that: vLLM's prefix cache sees the full
prompts in one `/classify` call, the in-process scorer runs the prefix once and the suffixes against its
key/value cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PromptGroup:
    """Prompts `prefix + suffix` for each suffix; all of one user and one wording."""

    prefix: str
    suffixes: tuple[str, ...]
    route: str = ""
    """Which user the prompts are for: the key that picks a vLLM replica (`routing.py`); "" = the prefix."""

    def prompts(self) -> list[str]:
        """The full prompt texts, in suffix order."""
        return [self.prefix + suffix for suffix in self.suffixes]


class Scorer(Protocol):
    """Turns prompts into click scores P(Yes) in [0, 1]."""

    name: str

    async def start(self) -> None:
        """Called once by the lifespan before the first request (load a model, probe a server); must not
        raise for a backend that is merely down (readiness reports that)."""
        ...

    async def score(self, groups: Sequence[PromptGroup]) -> list[list[float]]:
        """One list of scores per group, in suffix order. Raises BackendUnavailableError when unreachable."""
        ...

    async def ready(self) -> bool:
        """True when the backend can answer now (used by /readyz, which bounds the call to about 1 s)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...
