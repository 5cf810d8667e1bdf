"""The cached trunk kept on disk, so a tuning run resumed after a restart does not run it again.

Over every ML-1M train row the frozen layers' output (`trunk.compute_trunk`) takes the better part of an hour
to compute on a CPU and ~9 GB to hold; a run that spans restarts (`binllm llm tune --resume`) would pay that
again at every restart. `cached_trunk` stores it under `--trunk-cache-dir` (outside the work tree), named by a
hash of everything its numbers depend on: the base model, the precision, the number of frozen layers and
every group's token ids. A changed prompt set or model gets a new file; the old one is never read for it.

    binllm llm tune ... --lora-top-layers 4 --trunk-cache-dir ~/.cache/binllm/trunk --resume
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from model_store.llm.grouped import PrefixGroup
from model_store.llm.trunk import TrunkStates, compute_trunk


def trunk_key(groups: Sequence[PrefixGroup], start: int, tag: str) -> str:
    """A hash of what the trunk's numbers depend on (see the module docstring)."""
    digest = hashlib.sha256(f"{tag}|{start}".encode())
    for group in groups:
        digest.update(repr((group.prefix, group.rests, group.rows)).encode())
    return digest.hexdigest()[:24]


def cached_trunk(
    model: torch.nn.Module,
    groups: Sequence[PrefixGroup],
    pad_id: int,
    start: int,
    batch_size: int,
    *,
    store: str | Path | None,
    tag: str,
) -> TrunkStates:
    """`compute_trunk`, read from `store` when it holds this very trunk, written there after computing."""
    if store is None:
        return compute_trunk(model, groups, pad_id, start, batch_size)
    path = Path(store).expanduser() / f"trunk-{trunk_key(groups, start, tag)}.pt"
    if path.is_file():
        saved = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
        prefixes = {group.prefix: tensor for group, tensor in zip(groups, saved["prefixes"], strict=True)}
        rests = dict(zip(saved["rows"], saved["rests"], strict=True))
        return TrunkStates(start, prefixes, rests)
    trunk = compute_trunk(model, groups, pad_id, start, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    rows = sorted(trunk.rests)
    torch.save(
        {
            "prefixes": [trunk.prefixes[group.prefix] for group in groups],
            "rows": rows,
            "rests": [trunk.rests[row] for row in rows],
        },
        partial,
    )
    partial.replace(path)
    return trunk
