"""What the prefix cache saves the service: one user's candidates scored chunk by chunk, with and without it.

The service feeds a request to the model in chunks (`BINLLM_LOCAL__CHUNK_CANDIDATES`, 32), all sharing the
user's prefix. Without the cache every chunk runs that prefix again; with it (`model_store.llm.prefix_cache`)
only the first does. Same process, same model, the serving prompt of `bench/scoring_throughput.py` (real ML-1M
histories when the split is present, random codes), interleaved repeats, medians:

* one call: all candidates in one `score_groups` call (no chunking: the floor);
* chunks, no cache: what the service did before the cache;
* chunks, cache: each repeat starts from an empty cache, as a new user's request does;
* then one more candidate of the same user, alone (a returning user's one-item request), with the states the
  chunks left in the cache and without the cache.

Prints each way's median seconds and candidates/s, the largest score difference between the two chunked
ways, and last `speedup: X` (chunks without the cache / chunks with it). `--profile` first prints where one
call's time goes (`torch.profiler`: the operators with the most self CPU time, as shares).

    python bench/prefix_cache.py [--model artifacts/demo/model] [--candidates 100] [--chunk 32] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from scoring_throughput import DEFAULT_SPLIT, STYLES, real_users, workload

from model_store.llm.models import ensure_smollm2
from model_store.llm.scorer import PromptScorer

DEMO_MODEL = Path(__file__).resolve().parents[1] / "artifacts" / "demo" / "model"


def print_profile(run: Callable[[], object], top: int = 6) -> None:
    """The operators with the most self CPU time in one `run()`, as shares of the total."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    events = sorted(profile.key_averages(), key=lambda event: -event.self_cpu_time_total)
    total = sum(event.self_cpu_time_total for event in events)
    shares = ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in events[:top])
    print(f"one call, self CPU time by operator: {shares}")


def main() -> None:
    """Parse arguments, time the three ways interleaved, print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model", type=Path, help="servable model directory (default: the demo's, else SmolLM2)"
    )
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=32, help="candidates per call, as the service chunks")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or int8 (as the service)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="first show where one call's time goes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model or (DEMO_MODEL if DEMO_MODEL.is_dir() else ensure_smollm2())
    scorer = PromptScorer.from_dir(model_dir, dtype=args.dtype)
    cache = scorer.prefix_cache
    if cache is None:
        raise SystemExit("the scorer has no prefix cache")
    if not args.split.is_file():
        raise SystemExit(f"{args.split} is needed for real histories and titles")
    histories, titles = real_users(args.split, 1, args.candidates)
    prefix, suffixes = workload(STYLES["serving"], histories, titles, args.candidates)[0]
    print(
        f"model: {model_dir}, engine: {scorer.engine}, threads: {torch.get_num_threads()}, "
        f"{len(suffixes)} candidates in chunks of {args.chunk}"
    )

    def chunked() -> list[float]:
        return [
            score
            for start in range(0, len(suffixes), args.chunk)
            for score in scorer.score_groups([(prefix, suffixes[start : start + args.chunk])])[0]
        ]

    def without_cache() -> list[float]:
        scorer.prefix_cache = None
        try:
            return chunked()
        finally:
            scorer.prefix_cache = cache

    def with_cache() -> list[float]:
        cache.clear()  # a new user's request: its first chunk runs the prefix
        return chunked()

    def one_call() -> list[float]:
        cache.clear()
        return scorer.score_groups([(prefix, suffixes)])[0]

    def one_more(cache_on: bool) -> Callable[[], list[float]]:
        def run() -> list[float]:
            scorer.prefix_cache = cache if cache_on else None
            try:
                return scorer.score_groups([(prefix, suffixes[-1:])])[0]
            finally:
                scorer.prefix_cache = cache

        return run

    ways: dict[str, Callable[[], list[float]]] = {
        "one call": one_call,
        "chunks, no cache": without_cache,
        "chunks, cache": with_cache,
        "+1, cache": one_more(True),
        "+1, no cache": one_more(False),
    }
    with_cache()  # warm-up: thread pools, kernels, packed weights
    if args.profile:
        print_profile(one_call)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    scores: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, run in ways.items():
            started = time.perf_counter()
            scores[name] = run()
            seconds[name].append(time.perf_counter() - started)
    for name, times in seconds.items():
        median, scored = statistics.median(times), len(scores[name])
        print(f"{name:17s} median {median:.3f} s ({scored} candidates, {scored / median:.1f} candidates/s)")
    diff = max(abs(a - b) for a, b in zip(scores["chunks, cache"], scores["chunks, no cache"], strict=True))
    print(f"max abs score difference, chunks with vs without the cache: {diff:.2e}")
    speedup = statistics.median(seconds["chunks, no cache"]) / statistics.median(seconds["chunks, cache"])
    print(f"speedup: {speedup:.2f}")


if __name__ == "__main__":
    main()
