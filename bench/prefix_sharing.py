"""How much the shared-prefix path saves: one user's candidates scored with and without prefix sharing.

One user, N candidates (100 by default) in the BinLLM wording (history titles + 32-bit codes): first as N
independent prompts (`PromptScorer.score_prompts`), then as one prefix run once plus N suffixes against its
key/value cache (`PromptScorer.score_with_prefix`), same process, same model. Titles and history come from
the real ML-1M split when it is present (read only), else they are generated; codes are random (no codes
model is needed to time the LLM). Prints both times, the largest score difference, and last `speedup: X`.

    python bench/prefix_sharing.py                       # SmolLM2-135M-Instruct (converted on first use)
    python bench/prefix_sharing.py --model artifacts/llm/merged --candidates 20
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    render_candidate_suffix,
    render_prompt,
    render_user_prefix,
)
from model_store.data.io import read_split
from model_store.llm.grouped import common_prefix_length
from model_store.llm.models import ensure_smollm2, load_causal_lm
from model_store.llm.scorer import PromptScorer

DEFAULT_SPLIT = (
    Path(__file__).resolve().parents[1].parent / "shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz"
)


def real_user_and_titles(split: Path, count: int) -> tuple[list[str], list[str]]:
    """History (the longest one in the split, last 10 kept by the template) and `count` other real titles."""
    table = read_split(split)
    histories = table.column("his_title").to_pylist()
    longest = max(range(len(histories)), key=lambda index: len(histories[index]))
    history = [title for title in histories[longest] if title]
    seen = set(history)
    candidates = [title for title in dict.fromkeys(table.column("title").to_pylist()) if title not in seen]
    if len(candidates) < count:
        raise SystemExit(f"{split} has only {len(candidates)} candidate titles, asked for {count}")
    return history, candidates[:count]


def generated_user_and_titles(count: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """Plausible-looking titles with years, for when the real data is absent."""
    words = ["Night", "River", "Last", "Summer", "Stranger", "Heart", "City", "Storm", "Empire", "Dream"]

    def title() -> str:
        return f"{' '.join(rng.sample(words, rng.randint(1, 4)))} ({rng.randint(1930, 2000)})"

    return [title() for _ in range(10)], [title() for _ in range(count)]


def main() -> None:
    """Parse arguments, build one user's prompts, time both scoring paths, print the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="HF causal-LM directory (default: converted SmolLM2)")
    parser.add_argument(
        "--split", type=Path, default=DEFAULT_SPLIT, help="split to take titles from, if present"
    )
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of the independent path")
    parser.add_argument("--prefix-batch-size", type=int, default=16, help="suffix chunk of the shared path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    if args.split.is_file():
        history, titles = real_user_and_titles(args.split, args.candidates)
        source = f"real titles from {args.split.name}"
    else:
        history, titles = generated_user_and_titles(args.candidates, rng)
        source = "generated titles"
    style = PromptStyle()
    user = UserContext(history_titles=tuple(history), code=rng.getrandbits(style.bits))
    items = [CandidateItem(title=title, code=rng.getrandbits(style.bits)) for title in titles]
    prefix = render_user_prefix(user, style, with_codes=True)
    suffixes = [render_candidate_suffix(item, style, with_codes=True) for item in items]
    prompts = [render_prompt(user, item, style) for item in items]
    assert prompts == [prefix + suffix for suffix in suffixes]

    model_dir = args.model or ensure_smollm2()
    scorer = PromptScorer(*load_causal_lm(model_dir))
    token_ids = scorer.tokenizer(prompts)["input_ids"]
    token_lengths = [len(ids) for ids in token_ids]
    print(f"model: {model_dir} on {scorer.device}, threads: {torch.get_num_threads()}")
    print(
        f"{len(prompts)} candidates ({source}); prompt tokens: mean {sum(token_lengths) / len(prompts):.0f}, "
        f"shared {common_prefix_length(token_ids)}"
    )

    scorer.score_with_prefix(prefix, suffixes[:2])  # warm-up: first-call allocations, kernel selection
    started, cpu_started = time.perf_counter(), time.process_time()
    independent = scorer.score_prompts(prompts, batch_size=args.batch_size)
    independent_s, independent_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    started, cpu_started = time.perf_counter(), time.process_time()
    shared = scorer.score_with_prefix(prefix, suffixes, batch_size=args.prefix_batch_size)
    shared_s, shared_cpu = time.perf_counter() - started, time.process_time() - cpu_started

    diff = max(abs(a - b) for a, b in zip(independent, shared, strict=True))
    # CPU seconds as well: on a shared machine wall time also measures the neighbours.
    print(f"independent prompts: {independent_s:.2f} s wall, {independent_cpu:.2f} s CPU")
    print(f"prefix sharing:      {shared_s:.2f} s wall, {shared_cpu:.2f} s CPU")
    print(f"max abs score difference: {diff:.2e}")
    print(f"speedup: {independent_s / shared_s:.2f}")


if __name__ == "__main__":
    main()
