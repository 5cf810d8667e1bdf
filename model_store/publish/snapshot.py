"""Build one serving snapshot in memory: every user's code and history, every item's code and title.

A snapshot (see `model_store/contract/snapshot.py`) holds, per user, the code and the ids of the <= 10 most
recent positive items (newest last); per item, the code (None for a cold item) and the title; and the manifest of
the model. The stores in this package write it under a new version and switch to it atomically.

    python -c "from model_store.publish.snapshot import new_version_id; print(new_version_id())"

Which history a user gets: of every row of the user across the split files (train, valid, test), the most
recent one, by (timestamp, flag, file order); its `his` (the earlier positives, pad dropped) plus its own
item when its label is 1. This is what the papers' prompts would show for that user's next request.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model_store.codes.features import CollabFeatures
from model_store.contract.fusion import CodeScore
from model_store.contract.prompts import MAX_HISTORY_TITLES
from model_store.contract.snapshot import (
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UnknownEmbeddings,
    UserEntry,
)
from model_store.errors import PublishError

logger = logging.getLogger(__name__)

DEFAULT_KEEP = 3
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CodeSource(Protocol):
    """What the publisher needs from a trained codes directory (`model_store.codes.load_codes`)."""

    @property
    def bits(self) -> int:
        """Width of every code."""
        ...

    @property
    def version(self) -> str:
        """Identifies the codes directory; the model manifest's `code_version` must match it."""
        ...

    def user_code(self, uid: int) -> int | None:
        """The user's code, or None if the encoder never saw the user."""
        ...

    def item_code(self, iid: int) -> int | None:
        """The item's code, or None for a cold item."""
        ...

    def code_score(self) -> CodeScore | None:
        """The codes' own score (scale, bias, unknown codes), published for the service's fallback."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """One complete, not yet published snapshot; ids are strings, as the service API uses them."""

    manifest: SnapshotManifest
    users: dict[str, UserEntry]
    items: dict[str, ItemEntry]


def new_version_id(now: dt.datetime | None = None) -> str:
    """A version id that sorts by publish time: UTC `YYYYMMDDTHHMMSSffffffZ`."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def check_version_id(version: str) -> str:
    """Refuse version ids that could escape a directory or a Redis key segment (no '/', ':', globs)."""
    if not VERSION_RE.fullmatch(version):
        raise PublishError(f"invalid version id {version!r}: use letters, digits, '.', '_' and '-'")
    return version


def latest_histories(table: pa.Table, limit: int = MAX_HISTORY_TITLES) -> dict[int, list[int]]:
    """Per user, the positive item ids known after their most recent row, newest last, at most `limit`."""
    if table.num_rows == 0:
        return {}
    uid = table["uid"].to_numpy()
    # lexsort sorts by the last key first: uid, then timestamp, then flag (train < valid < test), then row.
    order = np.lexsort(
        (np.arange(table.num_rows), table["flag"].to_numpy(), table["timestamp"].to_numpy(), uid)
    )
    sorted_uid = uid[order]
    is_last = np.append(sorted_uid[1:] != sorted_uid[:-1], True)
    latest = table.take(pa.array(order[is_last])).select(["uid", "iid", "label", "his", "his_title"])
    histories: dict[int, list[int]] = {}
    for row in latest.to_pylist():
        # (0, "") is the papers' leading pad: an id whose title is empty is no item
        ids = [iid for iid, title in zip(row["his"], row["his_title"], strict=True) if title]
        if row["label"] == 1:
            ids.append(row["iid"])
        histories[row["uid"]] = ids[-limit:] if limit > 0 else []
    return histories


def item_titles(table: pa.Table) -> dict[int, str]:
    """Every item in the data, including those seen only in histories; a row's own title wins."""
    rows = table.select(["iid", "title"])
    history = pa.table({"iid": pc.list_flatten(table["his"]), "title": pc.list_flatten(table["his_title"])})
    pairs = pa.concat_tables([rows, history.cast(rows.schema)])
    pairs = pairs.filter(pc.not_equal(pairs["title"], ""))  # the pad (0, "")
    first = pairs.group_by("iid", use_threads=False).aggregate([("title", "first")])
    return dict(zip(first["iid"].to_pylist(), first["title_first"].to_pylist(), strict=True))


def build_snapshot(
    codes: CodeSource,
    table: pa.Table,
    model: ModelManifest,
    *,
    version: str | None = None,
    extra_items: dict[int, str] | None = None,
    features: CollabFeatures | None = None,
) -> Snapshot:
    """Assemble the snapshot: every user and item of the data with its code (and, for a CoLLM model, its
    packed CF embedding from `features`, required then); ids become strings."""
    version = check_version_id(version or new_version_id())
    soft = model.prompt_style.encoding == "embeddings"
    if soft and features is None:
        raise PublishError(
            "the model reads CF embeddings (encoding 'embeddings'): publish with its codes directory"
        )
    embeds = features if soft else None
    users = {
        str(uid): UserEntry(
            code=codes.user_code(uid),
            embedding=embeds.user_embedding(uid) if embeds is not None else None,
            history=[str(iid) for iid in history],
        )
        for uid, history in latest_histories(table).items()
    }
    titles = {**(extra_items or {}), **item_titles(table)}
    items = {
        str(iid): ItemEntry(
            code=codes.item_code(iid),
            embedding=embeds.item_embedding(iid) if embeds is not None else None,
            title=title,
        )
        for iid, title in titles.items()
    }
    unknown = None
    if embeds is not None:
        unknown = UnknownEmbeddings(
            width=embeds.width, user=embeds.unknown_user_embedding, item=embeds.unknown_item_embedding
        )
    manifest = SnapshotManifest(
        version=version,
        code_version=codes.version,
        model=model,
        n_users=len(users),
        n_items=len(items),
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        code_score=codes.code_score(),
        unknown_embeddings=unknown,
    )
    n_user_codes = sum(entry.code is not None for entry in users.values())
    n_item_codes = sum(entry.code is not None for entry in items.values())
    logger.info(
        "snapshot %s: %d users (%d with codes), %d items (%d with codes)",
        version, len(users), n_user_codes, len(items), n_item_codes,
    )  # fmt: skip
    return Snapshot(manifest=manifest, users=users, items=items)
