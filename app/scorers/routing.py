"""Which vLLM replica scores a request: consistent hashing on the user id, skipping dead replicas.

vLLM's prefix cache only pays when one user's candidates land on the replica that already holds that user's
prefix (history and code, `model_store/contract/prompts.py`). The service routes each request client-side on
the user id (`PromptGroup.route`, set by `PredictService`; the prefix text when a caller sets none), rather
than through the production-stack router's session routing: the service already holds the user id, a
request is one `/classify` call, and no extra hop or component is needed. Hashing the user id rather than the
prefix text also spreads users whose prefixes are equal (every new user with no history) over all replicas.
Each replica owns `VIRTUAL_NODES` points on a 64-bit ring (blake2b of "url#k"); a key goes to the first point
clockwise, so adding or removing one of N replicas moves only the keys of the arcs it gains or loses, about
1/N of them. A replica that refused a connection is tried last for `down_s` seconds (not never), so one dead
replica costs one failed connect, not one per request.

    python -c "from app.scorers.routing import ReplicaRing as R; print(R(['http://a', 'http://b']).order('user 7'))"
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Callable, Sequence

VIRTUAL_NODES = 128
DEFAULT_DOWN_S = 5.0


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def replica_urls(base_url: str) -> list[str]:
    """The replicas of `BINLLM_VLLM__BASE_URL`: one URL, or several separated by commas."""
    urls = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
    if not urls:
        raise ValueError("no vLLM base URL given")
    return urls


class ReplicaRing:
    """A consistent-hash ring over replica base URLs, with a short memory of which ones are down."""

    def __init__(
        self,
        replicas: Sequence[str],
        *,
        down_s: float = DEFAULT_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replicas:
            raise ValueError("a replica ring needs at least one replica")
        if len(set(replicas)) != len(replicas):
            raise ValueError(f"replicas listed twice: {list(replicas)}")
        self.replicas = list(replicas)
        self.down_s = down_s
        self._clock = clock
        self._down_until: dict[str, float] = {}
        points = sorted((_point(f"{url}#{k}"), url) for url in self.replicas for k in range(VIRTUAL_NODES))
        self._points = [point for point, _ in points]
        self._owners = [url for _, url in points]

    def owner(self, key: str) -> str:
        """The replica that owns `key` on the ring, up or down."""
        index = bisect.bisect(self._points, _point(key)) % len(self._points)
        return self._owners[index]

    def order(self, key: str) -> list[str]:
        """Every replica once, in the ring's order from `key`; replicas marked down go last."""
        start = bisect.bisect(self._points, _point(key))
        seen: list[str] = []
        for k in range(len(self._points)):
            url = self._owners[(start + k) % len(self._points)]
            if url not in seen:
                seen.append(url)
                if len(seen) == len(self.replicas):
                    break
        now = self._clock()
        return [u for u in seen if self._down_until.get(u, 0.0) <= now] + [
            u for u in seen if self._down_until.get(u, 0.0) > now
        ]

    def mark_down(self, url: str) -> None:
        """`url` refused a connection: try it last for the next `down_s` seconds."""
        self._down_until[url] = self._clock() + self.down_s

    def mark_up(self, url: str) -> None:
        """`url` answered: route to it normally again."""
        self._down_until.pop(url, None)
