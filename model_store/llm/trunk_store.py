"""The cached trunk kept on disk, so a tuning run resumed after a restart does not run it again.

Over every ML-1M train row the frozen layers' output (`trunk.compute_trunk`) takes hours to compute on a
2-core CPU and ~9 GB to hold; a run that spans restarts (`binllm llm tune --resume`) would pay that
again at every restart. `cached_trunk` stores it under `--trunk-cache-dir` (outside the work tree), named by a
hash of everything its numbers depend on: the base model, the frozen starting adapter, the precision, the
number of frozen layers and every group's token ids. A changed prompt set or model gets a new folder; the
old one is never read for it. The trunk is written in parts as it is computed, so a run stopped halfway keeps
what it computed.

    binllm llm tune ... --lora-top-layers 4 --trunk-cache-dir ~/.cache/binllm/trunk --resume
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

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
    part_groups: int = 1000,
) -> TrunkStates:
    """`compute_trunk`, kept under `store` in parts of `part_groups` groups, each written as soon as it is done.

    A run killed while computing the trunk loses at most one part; the next start reads the finished parts
    and computes the rest. Without `store`, plain `compute_trunk`.
    """
    if store is None:
        return compute_trunk(model, groups, pad_id, start, batch_size)
    folder = Path(store).expanduser() / f"trunk-{trunk_key(groups, start, tag)}"
    folder.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    prefixes: dict[tuple[int, ...], torch.Tensor] = {}
    rests: dict[int, torch.Tensor] = {}
    n_parts = math.ceil(len(groups) / part_groups)
    started = time.perf_counter()
    for index in range(n_parts):
        part = groups[index * part_groups : (index + 1) * part_groups]
        path = folder / f"part-{index:05d}.pt"
        if path.is_file():
            saved = torch.load(path, map_location=device, weights_only=True)
            states = TrunkStates(start, dict(zip([g.prefix for g in part], saved["prefixes"], strict=True)),
                                 dict(zip(saved["rows"], saved["rests"], strict=True)))  # fmt: skip
        else:
            states = compute_trunk(model, part, pad_id, start, batch_size)
            write_part(path, states, part)
            elapsed = time.perf_counter() - started
            tqdm.write(f"trunk part {index + 1}/{n_parts} written ({elapsed:.0f} s in this run)")
        prefixes.update(states.prefixes)
        rests.update(states.rests)
    return TrunkStates(start, prefixes, rests)


def write_part(path: Path, states: TrunkStates, part: Sequence[PrefixGroup]) -> None:
    """One part of the trunk, written to a hidden file and renamed into place (never half-written)."""
    rows = sorted(states.rests)
    partial = path.with_name(f".{path.name}.part")
    torch.save(
        {
            "prefixes": [states.prefixes[group.prefix] for group in part],
            "rows": rows,
            "rests": [states.rests[row] for row in rows],
        },
        partial,
    )
    partial.replace(path)
