"""Key/value states of recently scored prompt prefixes, kept so a user's next candidates skip the prefix pass.

The service scores a request in chunks (`LocalSettings.chunk_candidates`: fairness, and the cascade's
deadline), and every chunk of one request shares the same user prefix (~190 of ~210 tokens in the serving
layout). Without a cache each chunk runs that prefix again: at 32 candidates of ~24 own tokens per chunk the
repeated prefixes were about a quarter of a 100-candidate request's time (`bench/prefix_cache.py`). Causal
attention never looks ahead, so a prefix's keys and values depend on the prefix alone: reusing them is the same
computation (to float rounding of other batch shapes).

Entries are bounded by bytes, least recently used first out. For SmolLM2-135M in bf16 a ~190-token prefix
holds 30 layers x 2 x 3 KV heads x 190 x 64 x 2 bytes, about 4.4 MB, so the default 256 MB keeps ~60 users.
Scoring only: the stored states carry no gradient, and tuning never uses this cache.

    python -c "from model_store.llm.prefix_cache import PrefixKVCache; print(PrefixKVCache(256 << 20))"
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

LayerKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, H_kv, P, D]


def prefix_key(prefix: Sequence[int], table: torch.Tensor | None) -> Hashable:
    """What identifies a prefix's states across calls: its token ids, with each soft token (a negative id:
    `soft_tokens.soft_token`, valid within one call only) replaced by the bytes of the embedding it reads."""
    if table is None or min(prefix, default=0) >= 0:
        return tuple(prefix)
    return tuple(token if token >= 0 else table[-token - 1].numpy().tobytes() for token in prefix)


class PrefixKVCache:
    """A least-recently-used map from a prefix key to its per-layer keys and values, bounded by bytes.

    Thread-safe: the service scores from one worker thread, benchmarks and tests may share a scorer.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[LayerKV, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"PrefixKVCache({len(self)} prefixes, {self.bytes} of {self.max_bytes} bytes)"

    def get(self, key: Hashable) -> LayerKV | None:
        """The stored states of `key` (marked most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, kv: LayerKV) -> None:
        """Keep `kv` for `key`, dropping the least recently used entries beyond the byte bound (an entry
        larger than the whole bound is not kept)."""
        size = sum(k.nbytes + v.nbytes for k, v in kv)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (kv, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self.bytes = 0


@dataclass(frozen=True)
class CacheScope:
    """The cache as one scoring call sees it: keys made with that call's soft-token table (None: no soft
    tokens), so equal ids of two calls that read different embeddings never share states."""

    cache: PrefixKVCache
    table: torch.Tensor | None = None

    def key(self, prefix: Sequence[int]) -> Hashable:
        """The cache key of `prefix` in this call."""
        return prefix_key(prefix, self.table)
