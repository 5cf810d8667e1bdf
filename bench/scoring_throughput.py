"""Scoring throughput of the in-process scorer: the papers' prompt in fp32 against the serving prompt, in one run.

Configurations, same model and process: the papers' wording with 32-bit binary codes in fp32 (the baseline:
what the service scored before the serving layout), then the serving layout with hex codes (the candidate's
title, code and answer cue last; ~15 SmolLM2 tokens per candidate instead of ~60) in fp32 and in bf16, then
CoLLM's encoding in the same layout (one soft token per side instead of the code: an untrained projector,
since only the speed is measured) in fp32 and in bf16.
Workloads: 1 user x 100 candidates, and 8 users x 20 candidates scored together in shared passes
(`PromptScorer.score_groups`) against the same 8 users one after another. Users and titles are real ML-1M
rows when the split is present (read only), codes random. bf16 runs the weights in bf16 and keeps the Yes/No
margin and the sigmoid in fp32; its scores are compared with fp32's (max and p99 absolute difference). On a
CPU without native bf16 (no AVX512-BF16/AMX) bf16 is emulated and slower: the figure says so. Each
configuration's GFLOP/s is set against this CPU's peak for its dtype, from the vector units its flags imply
(`flop_per_cycle`: AVX2, AVX-512 full or split, AVX512-BF16, AMX-BF16).

    python bench/scoring_throughput.py [--model DIR] [--threads 2] [--dtypes float32,bfloat16,int8]

`int8` is the int8 engine (`model_store.llm.int8`: the decoder's linear layers in int8, activations per token, the
engine for CPUs without native bf16), run on a quantized copy of the fp32 model. `--isa avx2` reruns the
command with every kernel library capped at AVX2 (`model_store.llm.isa`): this CPU measured as an AVX2-only one.

Prints one line per configuration and workload, then, last, `candidates_per_s: X` for the fastest
configuration on 1 x 100 among those whose scores stay within `DRIFT_BAR` of fp32's.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    pack_embedding,
    render_candidate_suffix,
    render_user_prefix,
)
from model_store.data.io import read_split
from model_store.llm.int8 import quantize_int8
from model_store.llm.isa import isa_capped, reexec_capped
from model_store.llm.models import cpu_flags, cpu_has_bf16, ensure_smollm2, load_causal_lm
from model_store.llm.scorer import PromptScorer
from model_store.llm.soft_tokens import Projector, encode_prompts, install_projector, remove_projector

DEFAULT_SPLIT = (
    Path(__file__).resolve().parents[1].parent / "shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz"
)
STYLES = {
    "paper": PromptStyle(layout="paper", code_mode="binary"),
    "serving": PromptStyle(layout="serving", code_mode="hex"),
    "collm": PromptStyle(layout="serving", code_mode="hex", encoding="embeddings"),
}
COLLM_WIDTH = 32  # CF embedding values per side (the codes' width)
DRIFT_BAR = 0.05  # a dtype whose P(Yes) moves further from fp32's than this is shown, not counted as fastest
Group = tuple[str, list[str]]
T = TypeVar("T")


def real_users(split: Path, n_users: int, n_titles: int) -> tuple[list[list[str]], list[str]]:
    """The `n_users` longest distinct histories of the split and `n_titles` distinct candidate titles."""
    table = read_split(split)
    histories = {tuple(t for t in h if t) for h in table.column("his_title").to_pylist()}
    longest = sorted(histories, key=len, reverse=True)[:n_users]
    titles = list(dict.fromkeys(table.column("title").to_pylist()))[:n_titles]
    return [list(history) for history in longest], titles


def workload(
    style: PromptStyle, histories: Sequence[list[str]], titles: Sequence[str], per_user: int
) -> list[Group]:
    """One (prefix, suffixes) group per user, `per_user` candidates each, seeded random codes (and, for
    CoLLM's encoding, seeded random CF embeddings)."""
    rng, soft_rng = random.Random(0), random.Random(1)  # the codes drawn as before CoLLM's embeddings

    def embedding() -> str:
        return pack_embedding([soft_rng.uniform(-1, 1) for _ in range(COLLM_WIDTH)])

    groups = []
    for index, history in enumerate(histories):
        user = UserContext(
            history_titles=tuple(history), code=rng.getrandbits(style.bits), embedding=embedding()
        )
        picked = titles[index * per_user : (index + 1) * per_user] or titles[:per_user]
        items = [
            CandidateItem(title=title, code=rng.getrandbits(style.bits), embedding=embedding())
            for title in picked
        ]
        suffixes = [render_candidate_suffix(item, style, with_codes=True) for item in items]
        groups.append((render_user_prefix(user, style, with_codes=True), suffixes))
    return groups


def timed(run: Callable[[], T]) -> tuple[T, float]:
    """(result, seconds) of a no-argument callable."""
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def token_counts(scorer: PromptScorer, groups: Sequence[Group]) -> tuple[int, list[int]]:
    """Tokens the scorer runs: each user's prefix once, plus what each candidate adds beyond it."""
    prefix_total, added = 0, []
    for prefix, suffixes in groups:
        prefix_len = len(encode_prompts(scorer.tokenizer, [prefix]).ids[0])
        prefix_total += prefix_len
        full = encode_prompts(scorer.tokenizer, [prefix + s for s in suffixes]).ids
        added += [len(ids) - prefix_len for ids in full]
    return prefix_total, added


def cpu_clock_mhz() -> float:
    """The highest clock /proc/cpuinfo reports (NaN where unreadable)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
        return max(float(line.split(":")[1]) for line in lines if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        return float("nan")


def flop_per_cycle(flags: frozenset[str], vendor: str, family: int) -> dict[str, int]:
    """Peak FLOP per cycle and core, by the vector units the CPU's flags and family imply.

    fp32: two FMA pipes x lanes x 2 FLOP. Lanes: 16 with AVX-512 on Intel and on AMD from Zen 5 (family 26);
    Zen 4 (family 25) runs a 512-bit op as two 256-bit halves, so it peaks as AVX2 does (8 lanes); 8 with AVX2.
    bf16: AVX512-BF16's dot product (VDPBF16PS) does two bf16 products per fp32 lane: twice fp32; AMX-BF16
    (Intel Sapphire Rapids on) does 1,024 FLOP per cycle and core; without either, bf16 is emulated (fp32's).
    """
    full_512 = "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 26)
    fp32 = 2 * (16 if full_512 else 8) * 2
    bf16 = 1024 if "amx_bf16" in flags else 2 * fp32 if "avx512_bf16" in flags else fp32
    return {"float32": fp32, "bfloat16": bf16}


def peak_gflops(threads: int, capped: str | None = None) -> dict[str, float]:
    """Peak GFLOP/s per dtype for `threads` cores at the reported clock (`flop_per_cycle`); with the ISA
    capped at AVX2, as the AVX2 units alone give."""
    vendor, family = "", 0
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
            elif line.startswith("cpu family"):
                family = int(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    flags = cpu_flags()
    if capped == "avx2":
        flags = frozenset(f for f in flags if not f.startswith(("avx512", "amx")))
    per_cycle = flop_per_cycle(flags, vendor, family)
    return {dtype: threads * n * cpu_clock_mhz() / 1000 for dtype, n in per_cycle.items()}


def main() -> None:
    """Parse arguments, score every configuration and workload, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="HF causal-LM directory (default: converted SmolLM2)")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,bfloat16", help="dtypes of the serving configuration")
    parser.add_argument("--batch-size", type=int, default=16, help="candidate rows per forward pass")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native", help="cap the kernels' ISA")
    args = parser.parse_args()
    if args.isa != "native":
        reexec_capped(args.isa)
    torch.set_num_threads(args.threads)
    histories, titles = real_users(args.split, 8, 100)
    model_dir = args.model or ensure_smollm2()
    model, tokenizer = load_causal_lm(model_dir, dtype=torch.float32, device="cpu")
    capped = isa_capped()
    native_bf16 = cpu_has_bf16() and capped is None
    print(
        f"model: {model_dir}, threads: {torch.get_num_threads()}, native bf16: {native_bf16}, "
        f"isa: {f'capped at {capped}' if capped else 'all this CPU has'}"
    )
    embeddings = model.get_input_embeddings().weight.numel()  # type: ignore[operator]  # a lookup: no FLOPs
    flops_per_token = 2 * (sum(p.numel() for p in model.parameters()) - embeddings)
    peaks = peak_gflops(args.threads, capped)
    print(", ".join(f"{dtype} peak {gflops:.0f} GFLOP/s" for dtype, gflops in peaks.items()))

    dtypes = args.dtypes.split(",")
    configs = [("paper", "float32")] + [(layout, d) for layout in ("serving", "collm") for d in dtypes]
    torch.manual_seed(0)
    projector = Projector(COLLM_WIDTH, int(model.config.hidden_size))  # untrained: speed only
    results: dict[tuple[str, str], float] = {}
    reference: dict[str, list[float]] = {}
    drift: dict[str, float] = {}  # dtype -> max |P(Yes) - fp32's| on the serving prompts
    int8_model = None
    for layout, dtype in configs:
        if dtype == "int8":
            if int8_model is None:  # quantized once, from the fp32 weights
                model.to(torch.float32)  # type: ignore[arg-type]  # transformers hides Module.to
                int8_model = quantize_int8(copy.deepcopy(model))
            run_model = int8_model
        else:
            model.to(getattr(torch, dtype))
            run_model = model
        if layout == "collm":
            install_projector(run_model, projector)
        else:
            remove_projector(run_model)
        scorer = PromptScorer(run_model, tokenizer)
        one = workload(STYLES[layout], histories[:1], titles, 100)
        eight = workload(STYLES[layout], histories, titles, 20)
        scorer.score_groups(eight[:1], batch_size=args.batch_size)  # warm-up
        single, single_s = timed(lambda: scorer.score_groups(one, batch_size=args.batch_size))  # noqa: B023
        together, together_s = timed(lambda: scorer.score_groups(eight, batch_size=args.batch_size))  # noqa: B023
        _, apart_s = timed(lambda: [scorer.score_groups([g], args.batch_size)[0] for g in eight])  # noqa: B023
        results[(layout, dtype)] = 100 / single_s
        prefix_tokens, added = token_counts(scorer, one)
        gflops = flops_per_token * (prefix_tokens + sum(added)) / single_s / 1e9
        peak = peaks.get(dtype)  # none for int8: integer ops, not FLOPs
        of_peak = (
            f" = {100 * gflops / peak:.0f}% of this CPU's {peak:.0f} GFLOP/s {dtype} peak" if peak else ""
        )
        print(
            f"{layout} {dtype}: 1x100 {100 / single_s:.1f} candidates/s ({np.mean(added):.1f} tokens/candidate, "
            f"{gflops:.0f} GFLOP/s{of_peak}); "
            f"8x20 together {160 / together_s:.1f}/s, one user at a time {160 / apart_s:.1f}/s "
            f"(together {apart_s / together_s:.2f}x)"
        )
        if layout == "serving":
            flat = [score for scores in single + together for score in scores]
            reference.setdefault("float32", flat)
            if dtype != "float32":
                diff = np.abs(np.array(flat) - np.array(reference["float32"]))
                drift[dtype] = float(diff.max())
                print(
                    f"  {dtype} vs float32 scores: max abs diff {diff.max():.2e}, p99 {np.quantile(diff, 0.99):.2e}"
                )
    baseline = results[("paper", "float32")]
    drifting = {dtype for dtype, worst in drift.items() if worst > DRIFT_BAR}
    for dtype in sorted(drifting):
        print(f"{dtype} is not counted as fastest: its scores drift up to {drift[dtype]:.2f} from fp32's")
    best = max((key for key in results if key[1] not in drifting), key=lambda key: results[key])
    print(f"fastest: {' '.join(best)}, {results[best] / baseline:.2f}x the papers' prompt in fp32")
    print(f"candidates_per_s: {results[best]:.1f}")


if __name__ == "__main__":
    main()
