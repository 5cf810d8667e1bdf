"""A tiny published catalogue (directory snapshot) and a recording scorer for the app's unit tests.

Catalogue: user "u1" has a code and two history titles; "u2" is known but has no code; items "i1", "i2"
have codes, "i3" has none (a cold item), "h1"/"h2" serve as history items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.scorers.base import PromptGroup
from app.scorers.instant import pseudo_score
from model_store.contract.fusion import CodeScore, ScoreFusion
from model_store.contract.prompts import PromptStyle
from model_store.contract.snapshot import ItemEntry, ModelManifest, SnapshotManifest, UserEntry
from model_store.publish import Snapshot
from model_store.publish.directory import DirectoryPublisher

USERS = {
    "u1": UserEntry(code=0xF0F0F0F0, history_titles=["Heat (1995)", "Ran (1985)"]),
    "u2": UserEntry(code=None, history_titles=["Alien (1979)"]),
}
ITEMS = {
    "i1": ItemEntry(code=1, title="Toy Story (1995)"),
    "i2": ItemEntry(code=0xFFFF0000, title="Jumanji (1995)"),
    "i3": ItemEntry(code=None, title="Brand New (2024)"),
    "h1": ItemEntry(code=3, title="Casino (1995)"),
    "h2": ItemEntry(code=4, title="Fargo (1996)"),
}


def make_snapshot(
    version: str = "v1",
    *,
    with_codes: bool = True,
    model_version: str = "m-test",
    fusion: ScoreFusion | None = None,
    code_score: CodeScore | None = None,
    prompt_style: PromptStyle | None = None,
) -> Snapshot:
    """The test catalogue under `version`, for a model tuned with or without codes (and maybe a blend)."""
    model = ModelManifest(
        model_version=model_version,
        with_codes=with_codes,
        yes_token="ĠYes",
        no_token="ĠNo",
        yes_token_id=1,
        no_token_id=2,
        code_version="c-test",
        fusion=fusion,
        **({"prompt_style": prompt_style} if prompt_style is not None else {}),
    )
    manifest = SnapshotManifest(
        version=version,
        code_version="c-test",
        model=model,
        n_users=len(USERS),
        n_items=len(ITEMS),
        created_at="2025-01-01T00:00:00+00:00",
        code_score=code_score,
    )
    return Snapshot(manifest=manifest, users=dict(USERS), items=dict(ITEMS))


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    """A snapshot directory with the test catalogue published as the active version."""
    root = tmp_path / "snapshots"
    DirectoryPublisher(root).publish(make_snapshot())
    return root


class RecordingScorer:
    """Scores each prompt with `pseudo_score(prompt)` and remembers the groups it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[list[PromptGroup]] = []
        self.is_ready = True
        self.fail_with: Exception | None = None
        self.wrong_count = False
        self.delay_s = 0.0

    async def score(self, groups: Sequence[PromptGroup]) -> list[list[float]]:
        """Pseudo-scores, or the configured failure."""
        self.calls.append(list(groups))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        scores = [[pseudo_score(p) for p in group.prompts()] for group in groups]
        return [s[:-1] for s in scores] if self.wrong_count else scores

    async def start(self) -> None:
        """Nothing to start."""

    async def ready(self) -> bool:
        """As configured."""
        return self.is_ready

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.fixture
def scorer() -> RecordingScorer:
    """A fresh recording scorer."""
    return RecordingScorer()


@pytest.fixture
def snapshot_factory() -> object:
    """`make_snapshot` itself, for tests that publish more versions."""
    return make_snapshot
