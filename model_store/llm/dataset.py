"""Split rows -> the exact prompt texts the model is tuned and scored on, with labels and user ids.

Stage 1 of BinLLM tuning (Zhang et al., ACL 2024, section 3.3) sees text-only prompts; stage 2 sees the same
rows with the user's and the item's binary codes written into the prompt. A row whose user or item has no code
(never seen by the encoder) is written as the service writes a cold request: in the text-only wording, or,
with the style's `unknown_codes="learned"`, with the codebook's learned unknown code in its place; either way
it is counted in `n_cold`. `unknown_item_share` (tuning only) hides a seeded share of items' codes behind the
unknown code, since the papers' ML-1M train split has no cold item to learn that code from. The wording itself
comes only from `model_store.contract.prompts`.

    python -c "from model_store.llm.dataset import *; from model_store.data.io import read_split; \\
      print(build_prompts(read_split('../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz'), max_samples=1).prompts[0])"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from model_store.codes.features import CollabFeatures
from model_store.contract.prompts import (
    MAX_HISTORY_TITLES,
    CandidateItem,
    PromptStyle,
    UserContext,
    fill_unknown,
    render_candidate_suffix,
    render_user_prefix,
)


class CodeLookup(Protocol):
    """What the prompt builder needs from a codes directory (`model_store.codes` `CodeBook`)."""

    @property
    def bits(self) -> int: ...

    @property
    def version(self) -> str: ...

    def user_code(self, uid: int) -> int | None: ...

    def item_code(self, iid: int) -> int | None: ...

    @property
    def unknown_user_code(self) -> int: ...

    @property
    def unknown_item_code(self) -> int: ...


class RowCodes(Protocol):
    """Codes chosen per split row (`model_store.codes.out_of_fold.OutOfFoldCodes`): the train rows of residual
    tuning read the codes of a model that never saw them."""

    def for_row(self, row: int) -> CodeLookup: ...


@dataclass(frozen=True)
class PromptSet:
    """Prompts with their labels and user ids (UAUC groups by user), in one order.

    `n_cold` counts rows that asked for codes but missed one (text-only wording, or the unknown code).
    `prefixes[k]` is the user part of `prompts[k]` (equal prefixes = one shared forward pass in tuning).
    """

    prompts: list[str]
    prefixes: list[str]
    labels: list[int]
    uids: list[int]
    iids: list[int]
    n_cold: int = 0
    rows: list[int] | None = None  # indices of the kept rows in the split table (None = all, in order)
    # Per row, the (user, item) codes the code score reads: the row's own, None where the prompt was written
    # without it (unknown to the encoder, or hidden by `unknown_item_share`). None for a text-only set.
    row_codes: list[tuple[int | None, int | None]] | None = None

    def __len__(self) -> int:
        return len(self.prompts)


def subsample_indices(n_rows: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Row indices to keep: all of them, or `max_samples` drawn without replacement by `seed`.

    The draw depends only on (n_rows, max_samples, seed), so a rerun or a resumed run sees the same rows;
    it is sorted back into file order so the subsample reads like the file.
    """
    if max_samples is None or max_samples >= n_rows:
        return np.arange(n_rows)
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    chosen = np.random.default_rng(seed).choice(n_rows, size=max_samples, replace=False)
    return np.sort(chosen)


def subsample_by_group(keys: list[tuple[object, ...]], max_samples: int | None, seed: int) -> np.ndarray:
    """Row indices of whole groups (equal keys) drawn in a seeded order until `max_samples` rows are kept.

    Rows of one user with one history share their prompt prefix, which tuning and scoring run once per
    group; drawing groups, not rows, keeps that sharing in a subsample (a row draw of 2,000 of ML-1M's
    33,891 train rows leaves almost every prefix alone). The last group drawn may be cut to fit.
    """
    if max_samples is None or max_samples >= len(keys):
        return np.arange(len(keys))
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    groups: dict[tuple[object, ...], list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    members = list(groups.values())
    kept: list[int] = []
    for index in np.random.default_rng(seed).permutation(len(members)):
        kept.extend(members[index][: max_samples - len(kept)])
        if len(kept) >= max_samples:
            break
    return np.sort(np.asarray(kept, dtype=np.int64))


def style_for(codes: CodeLookup | None, base: PromptStyle | None = None) -> PromptStyle:
    """The prompt style to use with `codes`: `base` (default wording) with the code width of the codebook."""
    style = base or PromptStyle()
    if codes is not None and codes.bits != style.bits:
        style = style.model_copy(update={"bits": codes.bits})
    return style


def build_prompts(
    table: pa.Table,
    *,
    codes: CodeLookup | None = None,
    style: PromptStyle | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    sample_groups: bool = False,
    unknown_item_share: float = 0.0,
    features: CollabFeatures | None = None,
    codes_of_row: RowCodes | None = None,
) -> PromptSet:
    """Render every (kept) row of a split as a prompt: with codes where `codes` knows both ids, else text-only.

    History titles are the row's `his_title` minus the "" pad; `format_history` keeps the last 10.
    `sample_groups=True` subsamples whole (user, history) groups (`subsample_by_group`) instead of rows.
    `unknown_item_share` > 0 (style `unknown_codes="learned"` only) writes the unknown item code for that
    seeded share of rows, so tuning sees the code every cold item gets online. The style's encoding
    'embeddings' (CoLLM) needs `features` from the same codes directory: each side's embedding is written where
    its code would be, and a side without a code gets the unknown embedding or the text-only wording alike.
    `codes_of_row` (with `codes`, which still sets the style) takes each row's codes from the codebook it names for
    that row of `table` (out-of-fold codes), in the prompt and in `PromptSet.row_codes` alike.
    """
    style = style_for(codes, style)
    if unknown_item_share and style.unknown_codes != "learned":
        raise ValueError("unknown_item_share needs the prompt style's unknown_codes='learned'")
    if codes is not None and style.encoding == "embeddings" and features is None:
        raise ValueError("encoding 'embeddings' needs the codes directory's features (CollabFeatures)")
    embeds = features if codes is not None and style.encoding == "embeddings" else None
    if codes_of_row is not None and (codes is None or embeds is not None):
        raise ValueError("per-row codes need `codes` and the 'codes' encoding (text codes)")
    if sample_groups and max_samples is not None:
        heads = table.select(["uid", "his_title"]).to_pydict()
        keys = [
            (uid, *[t for t in history if t][-MAX_HISTORY_TITLES:])
            for uid, history in zip(heads["uid"], heads["his_title"], strict=True)
        ]
        keep = subsample_by_group(keys, max_samples, seed)
    else:
        keep = subsample_indices(table.num_rows, max_samples, seed)
    columns = table.select(["uid", "iid", "label", "his_title", "title"]).take(pa.array(keep)).to_pydict()
    prompts: list[str] = []
    prefixes: list[str] = []
    n_cold = 0
    row_codes: list[tuple[int | None, int | None]] = []
    hide_item = np.random.default_rng([seed, 1]).random(len(keep)) < unknown_item_share
    for row, (uid, iid, history, title) in enumerate(
        zip(columns["uid"], columns["iid"], columns["his_title"], columns["title"], strict=True)
    ):
        book = codes_of_row.for_row(int(keep[row])) if codes_of_row is not None else codes
        user_code = book.user_code(uid) if book is not None else None
        item_code = book.item_code(iid) if book is not None and not hide_item[row] else None
        row_codes.append((user_code, item_code))
        user_embedding = item_embedding = None
        if embeds is not None:
            user_embedding = embeds.user_embedding(uid) if user_code is not None else None
            item_embedding = embeds.item_embedding(iid) if item_code is not None else None
        if codes is not None and (user_code is None or item_code is None):
            n_cold += 1
            if style.unknown_codes == "learned":
                assert book is not None
                user_code = fill_unknown(user_code, book.unknown_user_code, style)
                item_code = fill_unknown(item_code, book.unknown_item_code, style)
                if embeds is not None:
                    user_embedding = fill_unknown(user_embedding, embeds.unknown_user_embedding, style)
                    item_embedding = fill_unknown(item_embedding, embeds.unknown_item_embedding, style)
        with_codes = user_code is not None and item_code is not None
        user = UserContext(
            history_titles=tuple(t for t in history if t), code=user_code, embedding=user_embedding
        )
        item = CandidateItem(title=title, code=item_code, embedding=item_embedding)
        prefix = render_user_prefix(user, style, with_codes=with_codes)
        prefixes.append(prefix)
        prompts.append(prefix + render_candidate_suffix(item, style, with_codes=with_codes))
    return PromptSet(
        prompts=prompts,
        prefixes=prefixes,
        labels=[int(label) for label in columns["label"]],
        uids=[int(uid) for uid in columns["uid"]],
        iids=[int(iid) for iid in columns["iid"]],
        n_cold=n_cold,
        rows=[int(row) for row in keep],
        row_codes=row_codes if codes is not None else None,
    )
