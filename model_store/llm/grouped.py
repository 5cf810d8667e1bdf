"""Prefix-shared forward passes over many users at once: each user's prefix runs once, for training and scoring.

All prompts of one user (same history, same user code) share a long token prefix (~170 of ~194 SmolLM2
tokens in the serving layout). A `PrefixGroup` holds that shared prefix and the remaining tokens of each of
its prompts. `group_margins` runs the prefixes of several groups in one left-padded batch, copies each
group's key/value cache to its rows, runs every row's remainder against it in one right-padded batch, and
reads z_yes - z_no at each row's last real token. Causal attention never looks ahead, so this is the same
computation as running every full prompt, and gradients flow through the shared prefix exactly as they would
through each copy: tuning uses it as is (ML-1M train: 33,891 rows, 18,515 distinct prefixes).

    python bench/tune_throughput.py     # times it against whole-prompt batches
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from model_store.llm.answer import AnswerTokens


@dataclass(frozen=True)
class PrefixGroup:
    """Prompts sharing `prefix` tokens; `rests[k]` are prompt k's remaining tokens (at least one each)."""

    prefix: tuple[int, ...]
    rests: tuple[tuple[int, ...], ...]
    rows: tuple[int, ...]  # the prompts' indices in their prompt set


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix that every sequence shares (0 for no sequences)."""
    if not sequences:
        return 0
    shortest = min(len(seq) for seq in sequences)
    first = sequences[0]
    for position in range(shortest):
        token = first[position]
        if any(seq[position] != token for seq in sequences):
            return position
    return shortest


def make_group(token_ids: Sequence[Sequence[int]], rows: Sequence[int]) -> PrefixGroup:
    """The group of these prompts: their longest common token prefix, leaving each prompt >= 1 token.

    The shared part is found on tokens, not text: BPE may merge across the prefix/suffix text boundary.
    """
    members = [token_ids[row] for row in rows]
    shared = min(common_prefix_length(members), min(len(ids) for ids in members) - 1)
    return PrefixGroup(
        prefix=tuple(members[0][:shared]),
        rests=tuple(tuple(ids[shared:]) for ids in members),
        rows=tuple(rows),
    )


def group_rows(keys: Sequence[str]) -> list[list[int]]:
    """Row indices grouped by equal key (the rendered user prefix), groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def batches_of_groups(groups: Sequence[PrefixGroup], rows_per_batch: int) -> Iterator[list[PrefixGroup]]:
    """Consecutive groups packed into batches of about `rows_per_batch` rows; big groups are split."""
    batch: list[PrefixGroup] = []
    size = 0
    for group in groups:
        for start in range(0, len(group.rows), rows_per_batch):
            part = PrefixGroup(
                group.prefix,
                group.rests[start : start + rows_per_batch],
                group.rows[start : start + rows_per_batch],
            )
            if size and size + len(part.rows) > rows_per_batch:
                yield batch
                batch, size = [], 0
            batch.append(part)
            size += len(part.rows)
    if batch:
        yield batch


def shuffled_groups(groups: Sequence[PrefixGroup], seed: Sequence[int]) -> list[PrefixGroup]:
    """The groups in a seeded random order (rows stay with their group, so prefixes stay shared)."""
    order = np.random.default_rng(list(seed)).permutation(len(groups))
    return [groups[index] for index in order]


def _left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [G, P]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [G, P]
    for index, row in enumerate(rows):
        if row:
            ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[index, width - len(row) :] = 1
    return ids, mask


def _right_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [N, L]
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)  # [N]
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, lengths


def group_margins(
    model: torch.nn.Module, groups: Sequence[PrefixGroup], answer: AnswerTokens, pad_id: int
) -> torch.Tensor:
    """z_yes - z_no of every row of `groups`, in group then row order: [N] float32 (differentiable).

    Prefixes are left-padded (each ends at column P - 1) and the remainders right-padded after them, so a
    row's real tokens sit at positions len(prefix) + j and pads are masked everywhere.
    """
    device = next(model.parameters()).device
    decoder: Any = model.get_decoder()  # type: ignore[operator]
    row_group = torch.tensor(
        [g for g, group in enumerate(groups) for _ in group.rests], dtype=torch.long, device=device
    )  # [N]
    rests = [rest for group in groups for rest in group.rests]
    rest_ids, lengths = _right_padded(rests, pad_id)  # [N, L], [N]
    rest_mask = (torch.arange(rest_ids.shape[1])[None, :] < lengths[:, None]).long()  # [N, L]
    prefix_lengths = torch.tensor([len(group.prefix) for group in groups], dtype=torch.long)  # [G]
    start = prefix_lengths.to(device)[row_group][:, None]  # [N, 1]
    rest_positions = start + torch.arange(rest_ids.shape[1], device=device)[None, :]  # [N, L]
    if int(prefix_lengths.max()) == 0:
        hidden = decoder(
            input_ids=rest_ids.to(device),
            attention_mask=rest_mask.to(device),
            position_ids=rest_positions,
            use_cache=False,
        ).last_hidden_state  # [N, L, E]
    else:
        prefix_ids, prefix_mask = _left_padded([group.prefix for group in groups], pad_id)  # [G, P]
        prefix_positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)  # [G, P]
        prefix_cache = decoder(
            input_ids=prefix_ids.to(device),
            attention_mask=prefix_mask.to(device),
            position_ids=prefix_positions.to(device),
            use_cache=True,
        ).cache
        per_row = DynamicCache(
            ddp_cache_data=[
                (layer.keys.index_select(0, row_group), layer.values.index_select(0, row_group))
                for layer in prefix_cache.layers
            ]
        )  # each layer [N, H_kv, P, D]
        mask = torch.cat([prefix_mask.to(device)[row_group], rest_mask.to(device)], dim=1)  # [N, P + L]
        hidden = decoder(
            input_ids=rest_ids.to(device),
            attention_mask=mask,
            position_ids=rest_positions,
            cache=per_row,
            use_cache=True,
        ).last_hidden_state  # [N, L, E]
    last = hidden[torch.arange(len(rests), device=device), (lengths - 1).to(device)]  # [N, E]
    weight = model.get_output_embeddings().weight  # type: ignore[operator]  # [V, E]
    direction = weight[answer.yes_id] - weight[answer.no_id]  # [E]: z_yes - z_no = last . (w_yes - w_no)
    return last.float() @ direction.float()  # [N]


def ordered_margins(
    model: torch.nn.Module, batch: Sequence[PrefixGroup], answer: AnswerTokens, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`group_margins` and the prompt-set row index of each margin: ([N] float32, [N] long)."""
    rows = torch.tensor([row for group in batch for row in group.rows], dtype=torch.long)
    return group_margins(model, batch, answer, pad_id), rows
