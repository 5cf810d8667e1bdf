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

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask

from model_store.llm.answer import AnswerTokens
from model_store.llm.prefix_cache import CacheScope, LayerKV

# transformers 5.24 (this project's pin) names the KV cache argument `cache`; 5.17, still common on GPU hosts
# whose torch and transformers come with the system image, names it `past_key_values`. Same object, other keyword.
CACHE_KEYWORD = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


@dataclass(frozen=True)
class TrunkStates:
    """Inputs of decoder layer `start` for a prompt set: per prefix [P, E] and per row remainder [len, E].

    Written by `model_store.llm.trunk.compute_trunk`, read here by the passes that start at layer `start`.
    """

    start: int
    prefixes: dict[tuple[int, ...], torch.Tensor]
    rests: dict[int, torch.Tensor]


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


def make_group(
    token_ids: Sequence[Sequence[int]], rows: Sequence[int], limit: int | None = None
) -> PrefixGroup:
    """The group of these prompts: their longest common token prefix, leaving each prompt >= 1 token, and
    at most `limit` tokens when given.

    The shared part is found on tokens, not text: BPE may merge across the prefix/suffix text boundary.
    """
    members = [token_ids[row] for row in rows]
    shared = min(common_prefix_length(members), min(len(ids) for ids in members) - 1)
    if limit is not None:
        shared = min(shared, limit)
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


def left_padded_ids(rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Token rows left-padded with `pad_id` (each ends at the last column): [G, P]."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [G, P]
    for index, row in enumerate(rows):
        if row:
            ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
    return ids


def right_padded_ids(rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Token rows right-padded with `pad_id`: [N, L]."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [N, L]
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids


def _right_padded_states(states: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-row hidden states [len_k, E] stacked right-padded with zeros: [N, L, E]."""
    width = max(state.shape[0] for state in states)
    out = states[0].new_zeros((len(states), width, states[0].shape[1]))  # [N, L, E]
    for index, state in enumerate(states):
        out[index, : state.shape[0]] = state
    return out


def _left_padded_states(states: Sequence[torch.Tensor], axis: int = 0) -> torch.Tensor:
    """Per-group tensors stacked, each left-padded with zeros along its position axis `axis` to the longest:
    hidden states [len_g, E] -> [G, P, E]; keys or values [H_kv, len_g, D] (axis 1) -> [G, H_kv, P, D]."""
    width = max(state.shape[axis] for state in states)
    shape = list(states[0].shape)
    shape[axis] = width
    out = states[0].new_zeros((len(states), *shape))
    for index, state in enumerate(states):
        length = state.shape[axis]
        out[index].narrow(axis, width - length, length).copy_(state)
    return out


def embedded_inputs(
    decoder: Any, groups: Sequence[PrefixGroup], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of layer 0 for a batch of groups: prefixes left-padded [G, P, E], remainders right-padded
    [N, L, E] (pads are masked by `layout`'s masks)."""
    prefix_ids = left_padded_ids([group.prefix for group in groups], pad_id)  # [G, P]
    rest_ids = right_padded_ids([rest for group in groups for rest in group.rests], pad_id)  # [N, L]
    return decoder.embed_tokens(prefix_ids.to(device)), decoder.embed_tokens(rest_ids.to(device))


def run_layers(
    decoder: Any,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache | None,
    layers: range,
) -> torch.Tensor:
    """`decoder.layers[layers]` on `hidden` [B, T, E] exactly as the decoder's own forward runs them.

    Written out (mask, rotary embedding, layer loop) so that a pass can start above layer 0: the frozen
    trunk's cached output (`model_store.llm.trunk`) goes straight into the first tuned layer.
    """
    causal_mask = create_causal_mask(
        config=decoder.config,
        inputs_embeds=hidden,
        attention_mask=mask,
        position_ids=positions,
        layer_idx=layers.start,
        **{CACHE_KEYWORD: cache},
    )
    rotary = decoder.rotary_emb(hidden, position_ids=positions)
    for index in layers:
        hidden = decoder.layers[index](
            hidden,
            attention_mask=causal_mask,
            position_ids=positions,
            use_cache=cache is not None,
            position_embeddings=rotary,
            **{CACHE_KEYWORD: cache},
        )
    return hidden


@dataclass(frozen=True)
class GroupBatch:
    """One batch of groups laid out for `shared_pass`: prefixes left-padded, remainders right-padded."""

    prefix_mask: torch.Tensor  # [G, P] long, 1 on real tokens (P may be 0)
    rest_mask: torch.Tensor  # [N, L] long
    lengths: torch.Tensor  # [N] real tokens per remainder
    row_group: torch.Tensor  # [N] the group of each row
    prefix_lengths: torch.Tensor  # [G]


def layout(groups: Sequence[PrefixGroup]) -> GroupBatch:
    """Masks and indices of a batch of groups (no token ids: the caller embeds or looks up states)."""
    rests = [rest for group in groups for rest in group.rests]
    lengths = torch.tensor([len(rest) for rest in rests], dtype=torch.long)  # [N]
    rest_mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).long()  # [N, L]
    prefix_lengths = torch.tensor([len(group.prefix) for group in groups], dtype=torch.long)  # [G]
    width = int(prefix_lengths.max())
    prefix_mask = (torch.arange(width)[None, :] >= (width - prefix_lengths)[:, None]).long()  # [G, P]
    row_group = torch.tensor([g for g, group in enumerate(groups) for _ in group.rests], dtype=torch.long)
    return GroupBatch(prefix_mask, rest_mask, lengths, row_group, prefix_lengths)


def _rows_of(per_group: torch.Tensor, row_group: torch.Tensor) -> torch.Tensor:
    """Each row's copy of its group's tensor [G, ...] -> [N, ...]; one group is broadcast, not copied."""
    if per_group.shape[0] == 1:
        return per_group.expand(row_group.shape[0], *per_group.shape[1:])
    return per_group.index_select(0, row_group)


def prefix_pass(
    decoder: Any, batch: GroupBatch, prefix_in: torch.Tensor, layers: range
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Runs `layers` on each group's prefix once (left-padded): (outputs [G, P, E], keys and values of each
    layer in `layers`, each [G, H_kv, P, D])."""
    prefix_mask = batch.prefix_mask.to(prefix_in.device)
    prefix_positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)  # [G, P]
    prefix_cache = DynamicCache(config=decoder.config)
    prefix_out = run_layers(decoder, prefix_in, prefix_mask, prefix_positions, prefix_cache, layers)
    cache_layers: list[Any] = [prefix_cache.layers[index] for index in layers]
    return prefix_out, [(layer.keys, layer.values) for layer in cache_layers]


def rest_pass(
    decoder: Any,
    batch: GroupBatch,
    kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
    rest_in: torch.Tensor,
    layers: range,
    rest_chunk: int | None = None,
) -> torch.Tensor:
    """Runs `layers` on every row's remainder against its group's prefix keys and values `kv` (per layer
    [G, H_kv, P, D], left-padded as `batch.prefix_mask`): outputs [N, L, E].

    `rest_chunk` runs the remainders that many rows at a time, shortest first: small chunks keep each row's
    copy of its prefix cache in CPU cache and waste little on padding.
    """
    device = rest_in.device
    row_group = batch.row_group.to(device)
    start = batch.prefix_lengths.to(device)[row_group][:, None]  # [N, 1]
    rest_positions = start + torch.arange(rest_in.shape[1], device=device)[None, :]  # [N, L]
    rest_mask = batch.rest_mask.to(device)  # [N, L]
    prefix_mask = batch.prefix_mask.to(device)  # [G, P]

    def rests_of(rows: torch.Tensor) -> torch.Tensor:  # rows [n] -> their outputs [n, L_rows, E]
        width = int(batch.lengths[rows.cpu()].max())
        groups = row_group[rows]  # [n]
        per_row = DynamicCache(config=decoder.config)
        for index, (keys, values) in zip(layers, kv, strict=True):  # [G, H_kv, P, D] -> [n, H_kv, P, D]
            per_row.update(_rows_of(keys, groups), _rows_of(values, groups), index)
        mask = torch.cat([prefix_mask[groups], rest_mask[rows, :width]], dim=1)  # [n, P + L_rows]
        hidden = rest_in[rows, :width]
        return run_layers(decoder, hidden, mask, rest_positions[rows, :width], per_row, layers)

    every_row = torch.arange(rest_in.shape[0], device=device)
    if rest_chunk is None or rest_chunk >= rest_in.shape[0]:
        return rests_of(every_row)
    rest_out = torch.zeros_like(rest_in)  # [N, L, E]
    by_length = every_row[torch.argsort(batch.lengths.to(device), stable=True)]
    for chunk in by_length.split(rest_chunk):
        out = rests_of(chunk)
        rest_out[chunk, : out.shape[1]] = out
    return rest_out


def shared_pass(
    decoder: Any,
    batch: GroupBatch,
    prefix_in: torch.Tensor,
    rest_in: torch.Tensor,
    layers: range,
    rest_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs `layers` on each group's prefix once, then on every row's remainder against its group's KV.

    `prefix_in` [G, P, E] and `rest_in` [N, L, E] are the inputs of `layers.start` (embeddings for layer 0).
    Returns the outputs of the last layer in `layers`, before the final norm: ([G, P, E], [N, L, E]).
    `rest_chunk`: see `rest_pass`.
    """
    if batch.prefix_mask.shape[1] == 0:
        rest_mask, device = batch.rest_mask.to(rest_in.device), rest_in.device
        positions = torch.arange(rest_in.shape[1], device=device)[None, :].expand(rest_in.shape[0], -1)
        return prefix_in, run_layers(decoder, rest_in, rest_mask, positions, None, layers)
    prefix_out, kv = prefix_pass(decoder, batch, prefix_in, layers)
    return prefix_out, rest_pass(decoder, batch, kv, rest_in, layers, rest_chunk)


def cached_prefix_kv(
    decoder: Any,
    groups: Sequence[PrefixGroup],
    batch: GroupBatch,
    prefix_in: torch.Tensor,
    scope: CacheScope,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The prefix keys and values of a batch of groups (per layer [G, H_kv, P, D], left-padded), from the
    cache when every group's prefix is there, else from one prefix pass whose states are then kept."""
    stored = [scope.lookup(group.prefix) for group in groups]
    if all(entry is not None for entry in stored):
        return _left_padded_kv([entry for entry in stored if entry is not None])
    _, kv = prefix_pass(decoder, batch, prefix_in, range(len(decoder.layers)))
    width = batch.prefix_mask.shape[1]
    for g, (group, length) in enumerate(zip(groups, batch.prefix_lengths.tolist(), strict=True)):
        if len(groups) == 1:  # the pass's own tensors, nothing else refers to them
            scope.store(group.prefix, list(kv))
        else:  # a copy, so an entry does not hold the whole batch's tensors
            scope.store(
                group.prefix, [(_one(k, g, width - length), _one(v, g, width - length)) for k, v in kv]
            )
    return kv


def _one(states: torch.Tensor, group: int, first: int) -> torch.Tensor:
    """A copy of one group's real prefix positions of a layer's keys or values: [1, H_kv, P_g, D]."""
    return states[group : group + 1, :, first:].clone()


def _left_padded_kv(entries: Sequence[LayerKV]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stored per-group states ([1, H_kv, P_g, D] per layer) stacked left-padded with zeros: [G, H_kv, P, D]."""
    if len(entries) == 1:
        return list(entries[0])
    return [
        (
            _left_padded_states([entry[layer][0][0] for entry in entries], axis=1),
            _left_padded_states([entry[layer][1][0] for entry in entries], axis=1),
        )
        for layer in range(len(entries[0]))
    ]


def group_margins(
    model: torch.nn.Module,
    groups: Sequence[PrefixGroup],
    answer: AnswerTokens,
    pad_id: int,
    trunk: TrunkStates | None = None,
    rest_chunk: int | None = None,
    prefix_cache: CacheScope | None = None,
) -> torch.Tensor:
    """z_yes - z_no of every row of `groups`, in group then row order: [N] float32 (differentiable).

    Prefixes are left-padded (each ends at column P - 1) and the remainders right-padded after them, so a
    row's real tokens sit at positions len(prefix) + j and pads are masked everywhere. With `trunk`, the
    layers below `trunk.start` are not run: their cached outputs for these rows are the inputs. With
    `prefix_cache` (scoring only, whole model), prefixes whose keys and values it holds are not run again.
    """
    if prefix_cache is not None and trunk is not None:
        raise ValueError("the prefix cache holds whole-model states; it cannot start at a trunk")
    device = next(model.parameters()).device
    decoder: Any = model.get_decoder()  # type: ignore[operator]
    batch = layout(groups)
    if trunk is None:
        layers = range(len(decoder.layers))
        prefix_in, rest_in = embedded_inputs(decoder, groups, pad_id, device)
    else:
        layers = range(trunk.start, len(decoder.layers))
        prefix_in = _left_padded_states([trunk.prefixes[group.prefix] for group in groups])
        rest_in = _right_padded_states([trunk.rests[row] for group in groups for row in group.rows])
    if prefix_cache is None or batch.prefix_mask.shape[1] == 0:
        _, hidden = shared_pass(decoder, batch, prefix_in, rest_in, layers, rest_chunk)
    else:
        kv = cached_prefix_kv(decoder, groups, batch, prefix_in, prefix_cache)
        hidden = rest_pass(decoder, batch, kv, rest_in, layers, rest_chunk)
    last = hidden[torch.arange(hidden.shape[0], device=device), (batch.lengths - 1).to(device)]  # [N, E]
    last = decoder.norm(last)  # RMSNorm is per position: norming only the read positions is the same
    weight = model.get_output_embeddings().weight  # type: ignore[operator]  # [V, E]
    # z_yes - z_no = last . (w_yes - w_no), in fp32 whatever the weights' dtype (bf16 serving): the
    # difference of two bf16 rows rounded back to bf16 would lose the margin's low bits.
    direction = weight[answer.yes_id].float() - weight[answer.no_id].float()  # [E]
    return last.float() @ direction  # [N]


def ordered_margins(
    model: torch.nn.Module,
    batch: Sequence[PrefixGroup],
    answer: AnswerTokens,
    pad_id: int,
    trunk: TrunkStates | None = None,
    rest_chunk: int | None = None,
    prefix_cache: CacheScope | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`group_margins` and the prompt-set row index of each margin: ([N] float32, [N] long)."""
    rows = torch.tensor([row for group in batch for row in group.rows], dtype=torch.long)
    return group_margins(model, batch, answer, pad_id, trunk, rest_chunk, prefix_cache), rows
