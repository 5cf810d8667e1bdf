"""Which vLLM replica scores a request: consistent hashing on the user id, skipping dead replicas.

vLLM's prefix cache only pays when one user's candidates land on the replica that already holds that user's
prefix (history and code, `model_store/contract/prompts.py`). The service routes each request client-side on
the user id (`PromptGroup.route`, set by `PredictService`; the prefix text when a caller sets none), rather
than through the production-stack router's session routing: the service already holds the user id, a
request is one `/classify` call, and no extra hop or component is needed. Hashing the user id rather than the
prefix text also spreads users whose prefixes are equal (every new user with no history) over all replicas.
Each replica owns `VIRTUAL_NODES` points on a 64-bit ring (blake2b of "url#k"); a key goes to the first point
clockwise, so adding or removing one of N replicas moves only the keys of the arcs it gains or loses, about
1/N of them. Outlier ejection, as Envoy does it: a replica that refused a connection, or failed
`EJECT_AFTER` calls in a row (timed out, answered 429 or 5xx), is ejected: tried last for a back-off period
(`down_s`, doubled for each ejection in a row up to `MAX_EJECT_S`), so its users go to the next replica on the
ring, the same one every time (their prefixes keep one home), and one bad replica costs a few failed calls, not
one per request; an answer, or a passing readiness probe, brings it back. In Kubernetes the replicas are the
addresses of the vLLM headless Service, looked up again every few seconds (`Replicas`,
`BINLLM_VLLM__RESOLVE_REPLICAS`).

    python -c "from app.scorers.routing import ReplicaRing as R; print(R(['http://a', 'http://b']).order('user 7'))"
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx

logger = logging.getLogger(__name__)

VIRTUAL_NODES = 128
DEFAULT_DOWN_S = 5.0
EJECT_AFTER = 3  # consecutive failed calls (timeout, 429, 5xx) that eject a replica
MAX_EJECT_S = 60.0
RESOLVE_EVERY_S = 10.0


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
        self._failures: dict[str, int] = {}  # consecutive failed calls
        self._ejections: dict[str, int] = {}  # ejections in a row, for the back-off
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
        """`url` refused a connection: eject it now."""
        self._eject(url)

    def record_failure(self, url: str) -> bool:
        """`url` failed a call (timeout, 429, 5xx); True when that ejects it (EJECT_AFTER in a row)."""
        self._failures[url] = self._failures.get(url, 0) + 1
        if self._failures[url] < EJECT_AFTER or self.is_ejected(url):
            return False
        self._eject(url)
        return True

    def _eject(self, url: str) -> None:
        """Tried last for down_s seconds, doubled for each ejection in a row (at most MAX_EJECT_S)."""
        count = self._ejections.get(url, 0)
        self._ejections[url] = count + 1
        self._failures[url] = 0
        self._down_until[url] = self._clock() + min(self.down_s * 2**count, MAX_EJECT_S)
        logger.warning("vLLM replica %s ejected for %.0f s", url, self._down_until[url] - self._clock())

    def is_ejected(self, url: str) -> bool:
        """Whether `url` is ejected now."""
        return self._down_until.get(url, 0.0) > self._clock()

    def mark_up(self, url: str) -> None:
        """`url` answered: route to it normally again."""
        if self._down_until.pop(url, None) is not None:
            logger.info("vLLM replica %s back in rotation", url)
        self._failures.pop(url, None)
        self._ejections.pop(url, None)


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (a Kubernetes headless Service: one per ready pod)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class Replicas:
    """The vLLM replicas one scorer talks to: the ring, one pooled client each, and optional DNS discovery.

    With `resolve`, the single base URL names a headless Service; its addresses are the replicas, looked up
    again every `RESOLVE_EVERY_S` seconds, so pods that come and go move only their share of the users. A
    failed lookup keeps the last known replicas (or the base URL itself before the first success).
    """

    def __init__(
        self,
        base_url: str,
        make_client: Callable[[str], httpx.AsyncClient],
        *,
        resolve: bool = False,
        resolver: Resolver = resolve_addresses,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_urls = replica_urls(base_url)
        if resolve and len(self.base_urls) != 1:
            raise ValueError("resolving replicas needs exactly one base URL (a headless Service)")
        self.ring = ReplicaRing(self.base_urls, clock=clock)
        self._make_client = make_client
        self._clients = {url: make_client(url) for url in self.base_urls}
        self._resolve = resolve
        self._resolver = resolver
        self._clock = clock
        self._resolved_at: float | None = None

    async def order(self, key: str) -> list[str]:
        """The replicas to try for `key`, best first (after a DNS refresh when one is due)."""
        if self._resolve and (
            self._resolved_at is None or self._clock() - self._resolved_at >= RESOLVE_EVERY_S
        ):
            await self._refresh()
        return self.ring.order(key)

    def client(self, url: str) -> httpx.AsyncClient:
        """The pooled client of one replica."""
        return self._clients[url]

    async def _refresh(self) -> None:
        self._resolved_at = self._clock()
        base = httpx.URL(self.base_urls[0])
        port = base.port or (443 if base.scheme == "https" else 80)
        try:
            addresses = await self._resolver(base.host, port)
        except OSError as exc:
            logger.warning(
                "vLLM replicas: cannot resolve %s (%s); keeping %s", base.host, exc, self.ring.replicas
            )
            return
        urls = [f"{base.scheme}://{f'[{a}]' if ':' in a else a}:{port}" for a in addresses]
        if not urls or urls == self.ring.replicas:
            return
        for url in urls:
            if url not in self._clients:
                self._clients[url] = self._make_client(url)
        stale = [url for url in self._clients if url not in urls]
        self.ring = ReplicaRing(urls, down_s=self.ring.down_s, clock=self._clock)
        for url in stale:
            await self._clients.pop(url).aclose()
        logger.info("vLLM replicas now %s", urls)

    async def aclose(self) -> None:
        """Close every replica's connections."""
        for client in self._clients.values():
            await client.aclose()
