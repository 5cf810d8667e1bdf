"""Key/value states of recently scored prompt prefixes, kept so a user's next candidates skip the prefix pass.

The service scores a request in chunks (`LocalSettings.chunk_candidates`: fairness, and the cascade's
deadline), and every chunk of one request shares the same user prefix (~190 of ~210 tokens in the serving
layout). Without a cache each chunk runs that prefix again: a quarter of a 100-candidate request's time in
chunks of 32 (`bench/prefix_cache.py`). Causal attention never looks ahead, so a prefix's keys and values
depend on the prefix alone: reusing them is the same computation (to float rounding of other batch shapes), and
the states of a longer prefix hold those of every shorter one (sliced).

Entries are found by the caller's key (the scorer uses the user's prefix text) and hold the token prefix they
were computed for; a lookup is a hit only when that token prefix starts with the one asked for, so a key can
never return another prompt's states. Soft tokens (negative, call-local ids: `soft_tokens.soft_token`) are
compared by the embedding they read. Entries are bounded by bytes, least recently used first out: for
SmolLM2-135M in bf16 a ~190-token prefix holds 30 layers x 2 x 3 KV heads x 190 x 64 x 2 bytes, about 4.4 MB, so
the default 256 MB keeps ~60 users. Scoring only: the states carry no gradient, and tuning never uses the cache.

    python -c "from model_store.llm.prefix_cache import PrefixKVCache; print(PrefixKVCache(256 << 20))"
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

LayerKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, H_kv, P, D]
Tokens = tuple[Hashable, ...]  # a token prefix, soft tokens as the bytes of their embedding (`prefix_key`)


def prefix_key(prefix: Sequence[int], table: torch.Tensor | None) -> Tokens:
    """What identifies a prefix's states across calls: its token ids, with each soft token (a negative id:
    `soft_tokens.soft_token`, valid within one call only) replaced by the bytes of the embedding it reads."""
    if table is None or min(prefix, default=0) >= 0:
        return tuple(prefix)
    return tuple(token if token >= 0 else table[-token - 1].numpy().tobytes() for token in prefix)


class PrefixKVCache:
    """A least-recently-used map from a key to a token prefix and its per-layer keys and values, bounded by bytes.

    Thread-safe: the service scores from one worker thread, benchmarks and tests may share a scorer.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[Tokens, LayerKV, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"PrefixKVCache({len(self)} prefixes, {self.bytes} of {self.max_bytes} bytes)"

    def get(self, key: Hashable, tokens: Tokens) -> LayerKV | None:
        """The states of `tokens` ([1, H_kv, len(tokens), D] per layer, views of the entry's) when `key`'s entry
        was computed for `tokens` or a longer prefix starting with them (marked most recently used), else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0][: len(tokens)] != tokens:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            stored, kv, _ = entry
        if len(stored) == len(tokens):
            return kv
        return [(k[:, :, : len(tokens)], v[:, :, : len(tokens)]) for k, v in kv]

    def put(self, key: Hashable, tokens: Tokens, kv: LayerKV) -> None:
        """Keep `kv`, the states of `tokens`, under `key` (replacing its entry), dropping the least recently used
        entries beyond the byte bound (an entry larger than the whole bound is not kept)."""
        size = sum(k.nbytes + v.nbytes for k, v in kv)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
            if size > self.max_bytes:
                return
            self._entries[key] = (tokens, kv, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self.bytes = 0


@dataclass(frozen=True)
class CacheScope:
    """The cache as one scoring call sees it: each group's key (`keys`: the user's prefix text, by the group's
    token prefix; the tokens themselves when absent) and the call's soft-token table (None: no soft tokens), so
    equal ids of two calls that read different embeddings are never taken for one another."""

    cache: PrefixKVCache
    table: torch.Tensor | None = None
    keys: Mapping[tuple[int, ...], Hashable] = field(default_factory=dict)

    def lookup(self, prefix: Sequence[int]) -> LayerKV | None:
        """The stored states of this call's token prefix `prefix`, or None."""
        tokens = prefix_key(prefix, self.table)
        return self.cache.get(self.keys.get(tuple(prefix), tokens), tokens)

    def store(self, prefix: Sequence[int], kv: LayerKV) -> None:
        """Keep the states `kv` of this call's token prefix `prefix`."""
        tokens = prefix_key(prefix, self.table)
        self.cache.put(self.keys.get(tuple(prefix), tokens), tokens, kv)
