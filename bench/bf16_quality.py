"""What serving in bf16 (or int8) costs in quality: the same ML-1M valid rows scored in fp32 and in bf16, compared.

The served model directory is loaded as the service loads it (`PromptScorer.from_dir`), in fp32 and in bf16,
or with `--candidate int8` in the int8 engine (`model_store.llm.int8`: the decoder's linear layers with dynamic
int8 weights, for CPUs without native bf16; the summary's keys then say int8 where they say bf16; `--isa avx2`
reruns it with the kernels capped at AVX2, as an AVX2-only CPU computes: `model_store.llm.isa`), and each copy scores
the very same rows through `PromptScorer.score_groups`, the path the embedded service runs, with the Yes/No
tokens its manifest records. Only the weights and activations change dtype: the Yes/No margin and the sigmoid
stay in fp32 in both. A second fp32 run batches the rows differently (`--jitter-batch-size`,
`--jitter-rows-per-call`): how far two fp32 runs that only pad and batch differently land apart is the
numerical jitter a dtype's difference is judged against; `--jitter-max-samples N` runs it on a seeded N-row
share of the rows only (whole users; the jitter is the numerics', not the split's, and a whole-split run pays
for it in hours on a small CPU). Rows and prompts are built as `binllm llm eval` builds
them (`evaluate.split_prompts`: the model's prompt style and codes, `--max-samples` keeping whole (user,
history) groups, seeded; `--max-samples 0` = the whole split). The served score is the manifest's blend when
it declares one (as `/predict` and `llm eval` do), else P(Yes).

    python bench/bf16_quality.py [--model artifacts/demo/model] [--codes artifacts/demo/codes] \\
        [--split ../shared/data/ml-1m-collm/valid_ood2.jsonl.gz] [--max-samples 0] [--threads 2] \\
        [--candidate bfloat16|int8] [--isa native|avx2]

Prints one JSON line per run (auc, uauc, logloss, n, seconds, candidates_per_s), then, last, the summary:
fp32 and bf16 AUC/UAUC, the differences bf16 - fp32 with their paired bootstrap 95% interval (users
resampled, `--resamples` 1,000, seeded: `model_store/paired_bootstrap.py`), the same for the fp32 jitter, the
decision `keep_bf16` (false only when bf16's AUC interval lies wholly at or below -0.002, or its UAUC interval
wholly at or below -max(0.002, the jitter interval's widest end): a loss beyond what re-batching alone moves
UAUC by), the max and p99 absolute difference of P(Yes) per row, and the CPU, whether it
has native bf16, and torch's threads. On a CPU without AVX512-BF16/AMX, bf16 is emulated: its speed there says
nothing about a native-bf16 box.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_store.contract.fusion import ScoreFusion
from model_store.llm.dataset import CodeLookup, PromptSet
from model_store.llm.evaluate import (
    SplitPrompts,
    blended_scores,
    prefix_text_groups,
    read_fusion,
    score_groups_of_rows,
    split_prompts,
    warm_rows,
)
from model_store.llm.isa import isa_capped, reexec_capped
from model_store.llm.models import cpu_has_bf16, default_device
from model_store.llm.scorer import PromptScorer
from model_store.metrics import evaluate_scores
from model_store.paired_bootstrap import interval_excludes, intervals_as_dict, paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "artifacts/demo/model"  # what `make serve` serves (app default local.model_dir)
DEFAULT_CODES = ROOT / "artifacts/demo/codes"  # the codes `make demo` publishes with it
DEFAULT_SPLIT = ROOT.parent / "shared/data/ml-1m-collm/valid_ood2.jsonl.gz"
TOLERANCE = 0.001  # the former bar: AUC and UAUC in bf16 within 0.001 of fp32 (kept as `within_0_001`)
AUC_LOSS_BAR = 0.002  # bf16 is dropped only when its AUC interval shows a loss of at least this
SHORT_NAMES = {"bfloat16": "bf16", "int8": "int8"}  # the candidate engine as the summary's keys name it


def score_rows(
    model_dir: Path,
    engine: str,
    data: PromptSet,
    *,
    device: str,
    batch_size: int,
    rows_per_call: int,
    max_rows: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """P(Yes) per row of `data` with the weights run by `engine` ("float32", "bfloat16", "int8"), and the
    seconds the scoring took (not the load). With `max_rows`, only a seeded draw of whole users' groups holding
    about that many rows is scored; the other rows' P(Yes) is NaN."""
    scorer = PromptScorer.from_dir(model_dir, device=device, dtype=engine)  # as the service loads it
    groups, rows = prefix_text_groups(data)
    if max_rows is not None:
        groups, rows = drawn_groups(groups, rows, max_rows, seed)
    scorer.score_groups([(groups[0][0], groups[0][1][:1])], batch_size=batch_size)  # warm-up, untimed
    started = time.perf_counter()
    p_yes = score_groups_of_rows(
        scorer, groups, rows, len(data), batch_size=batch_size, rows_per_call=rows_per_call
    )
    seconds = time.perf_counter() - started
    del scorer
    return p_yes, seconds


def drawn_groups(
    groups: list[tuple[str, list[str]]], rows: list[list[int]], max_rows: int, seed: int
) -> tuple[list[tuple[str, list[str]]], list[list[int]]]:
    """Whole groups drawn in a seeded order until they hold at least `max_rows` rows (all when fewer), kept
    in their original order."""
    picked, total = [], 0
    for index in np.random.default_rng(seed).permutation(len(groups)).tolist():
        if total >= max_rows:
            break
        picked.append(index)
        total += len(rows[index])
    picked.sort()
    return [groups[index] for index in picked], [rows[index] for index in picked]


def scores_of_run(
    scores_dir: Path | None, name: str, n_rows: int, score: Callable[[], tuple[np.ndarray, float]]
) -> tuple[np.ndarray, float]:
    """`score()`, or the run's scores and seconds saved in `scores_dir` by an earlier, interrupted invocation
    with the same rows (a whole-split run takes hours on a small CPU); saved there after scoring."""
    if scores_dir is None:
        return score()
    path = scores_dir / f"{name}.npz"
    if path.is_file():
        saved = np.load(path)
        if len(saved["p_yes"]) == n_rows:
            return saved["p_yes"], float(saved["seconds"])
    p_yes, seconds = score()
    scores_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, p_yes=p_yes, seconds=seconds)
    return p_yes, seconds


def served_scores(
    fusion: ScoreFusion | None, prompted: SplitPrompts, codes: CodeLookup | None, p_yes: np.ndarray
) -> np.ndarray:
    """What /predict returns for these rows: the manifest's blend of P(Yes) and the codes, else P(Yes)."""
    if fusion is None:
        return p_yes
    return blended_scores(
        fusion, p_yes, prompted.data, codes, warm_rows(prompted.data, prompted.prompt_codes)
    )


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's answer elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="servable model directory")
    parser.add_argument("--codes", type=Path, default=DEFAULT_CODES, help="codes directory for the prompts")
    parser.add_argument(
        "--no-codes", action="store_true", help="score text-only prompts (no codes directory)"
    )
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--max-samples", type=int, default=1000, help="rows kept, whole groups (0 = all)")
    parser.add_argument("--seed", type=int, default=0, help="the draw of `binllm llm eval --seed`")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--batch-size", type=int, default=16, help="candidate rows per remainder chunk")
    parser.add_argument("--rows-per-call", type=int, default=64, help="rows per score_groups call")
    parser.add_argument(
        "--jitter-batch-size", type=int, default=32, help="the second fp32 run's candidate rows per chunk"
    )
    parser.add_argument(
        "--jitter-rows-per-call", type=int, default=128, help="the second fp32 run's rows per call"
    )
    parser.add_argument(
        "--jitter-max-samples",
        type=int,
        default=0,
        help="rows of the second fp32 run, whole users, seeded (0 = all the rows)",
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of users")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native", help="cap the kernels' ISA")
    parser.add_argument(
        "--candidate", choices=sorted(SHORT_NAMES), default="bfloat16", help="the engine compared with fp32"
    )
    parser.add_argument(
        "--scores-dir", type=Path, help="keep each run's scores here and reuse them on a rerun (same rows)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Score the rows in both dtypes, print a JSON line per dtype and the summary line; return the summary."""
    args = parse_args(argv)
    if args.isa != "native":
        reexec_capped(args.isa)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    codes: CodeLookup | None = None
    if not args.no_codes:
        from model_store.llm.tune import load_codebook

        codes = load_codebook(str(args.codes))
    prompted = split_prompts(
        args.model, args.split, codes=codes, max_samples=args.max_samples or None, seed=args.seed
    )
    data, plan = prompted.data, prompted.plan
    fusion = read_fusion(args.model, None)
    candidate, short = args.candidate, SHORT_NAMES[args.candidate]
    jitter_rows = args.jitter_max_samples or None
    runs = {  # name -> (engine, batch size, rows per call, rows scored: None = all)
        "float32": ("float32", args.batch_size, args.rows_per_call, None),
        candidate: (candidate, args.batch_size, args.rows_per_call, None),
        "float32_rebatched": ("float32", args.jitter_batch_size, args.jitter_rows_per_call, jitter_rows),
    }
    p_yes: dict[str, np.ndarray] = {}
    served: dict[str, np.ndarray] = {}
    scored: dict[str, np.ndarray] = {}  # run -> [N] bool: the rows it scored
    lines: dict[str, dict[str, Any]] = {}
    for name, (engine, batch_size, rows_per_call, max_rows) in runs.items():
        run = functools.partial(
            score_rows,
            args.model,
            engine,
            data,
            device=device,
            batch_size=batch_size,
            rows_per_call=rows_per_call,
            max_rows=max_rows,
            seed=args.seed,
        )
        saved_as = name if max_rows is None else f"{name}_{max_rows}"  # a share is not the whole run
        p_yes[name], seconds = scores_of_run(args.scores_dir, saved_as, len(data), run)
        served[name] = score = served_scores(fusion, prompted, codes, p_yes[name])
        scored[name] = ~np.isnan(p_yes[name])  # [N]: every row, or the jitter run's share
        uids, labels = np.asarray(data.uids)[scored[name]], np.asarray(data.labels)[scored[name]]
        line: dict[str, Any] = {"run": name, "dtype": engine}
        line.update(evaluate_scores(uids, labels, score[scored[name]]))
        line.update(batch_size=batch_size, rows_per_call=rows_per_call)
        if fusion is not None:
            line["p_yes"] = dict(evaluate_scores(uids, labels, p_yes[name][scored[name]]))
        line.update(seconds=round(seconds, 3), candidates_per_s=round(len(uids) / seconds, 2))
        lines[name] = line
        print(json.dumps(line, sort_keys=True), flush=True)
    bootstrap = {
        name: paired_bootstrap(
            np.asarray(data.uids)[scored[name]],
            np.asarray(data.labels)[scored[name]],
            served["float32"][scored[name]],
            served[name][scored[name]],
            resamples=args.resamples,
            seed=args.seed,
        )
        for name in (candidate, "float32_rebatched")
    }
    candidate_ci, jitter_ci = bootstrap[candidate], bootstrap["float32_rebatched"]
    auc_loss = interval_excludes(candidate_ci["auc"], AUC_LOSS_BAR)
    uauc_bar = max(AUC_LOSS_BAR, abs(jitter_ci["uauc"].low), abs(jitter_ci["uauc"].high))
    uauc_loss = interval_excludes(candidate_ci["uauc"], uauc_bar)
    fp32, cand = lines["float32"], lines[candidate]
    diff = np.abs(p_yes[candidate] - p_yes["float32"])  # [N]
    summary: dict[str, Any] = {
        "candidate": candidate,
        "auc_fp32": fp32["auc"],
        f"auc_{short}": cand["auc"],
        "uauc_fp32": fp32["uauc"],
        f"uauc_{short}": cand["uauc"],
        "max_abs_diff": float(diff.max()),
        "p99_abs_diff": float(np.quantile(diff, 0.99)),
        "mean_abs_diff": float(diff.mean()),
        **intervals_as_dict(candidate_ci),
        **intervals_as_dict(jitter_ci, prefix="jitter_"),
        "jitter_max_abs_diff": float(np.nanmax(np.abs(p_yes["float32_rebatched"] - p_yes["float32"]))),
        "jitter_rows": int(scored["float32_rebatched"].sum()),
        "ci_level": candidate_ci["auc"].level,
        "resamples": args.resamples,
        "uauc_loss_bar": uauc_bar,
        f"keep_{short}": not (auc_loss or uauc_loss),
        "score": "blend" if fusion is not None else "p_yes",
        "n_rows": len(data),
        # rows a code-tuned model saw in the text-only wording, counted as `binllm llm eval` counts them
        "n_cold": (data.n_cold if prompted.prompt_codes is not None else len(data)) if plan.with_codes else 0,
        "with_codes": plan.with_codes,
        "split": str(args.split),
        "max_samples": args.max_samples,
        "seed": args.seed,
        "model": str(args.model),
        "device": device,
        "cpu": cpu_name(),
        "cpu_has_bf16": cpu_has_bf16(),
        "isa_capped": isa_capped(),
        "bf16_native": device.startswith("cuda") or (cpu_has_bf16() and isa_capped() is None),
        "torch_threads": torch.get_num_threads(),
        f"{short}_speedup": round(fp32["seconds"] / cand["seconds"], 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    summary["within_0_001"] = bool(abs(summary["d_auc"]) <= TOLERANCE and abs(summary["d_uauc"]) <= TOLERANCE)
    if fusion is not None:  # a blend is served: P(Yes) alone as well
        summary["p_yes_d_auc"] = cand["p_yes"]["auc"] - fp32["p_yes"]["auc"]
        summary["p_yes_d_uauc"] = cand["p_yes"]["uauc"] - fp32["p_yes"]["uauc"]
    if plan.with_codes and prompted.prompt_codes is None:
        summary["warning"] = "the model was tuned with codes but none were given: every row is text-only"
    elif (
        plan.code_version is not None
        and prompted.prompt_codes is not None
        and prompted.prompt_codes.version != plan.code_version
    ):
        summary["warning"] = (
            f"codes version {prompted.prompt_codes.version} != tuned with {plan.code_version}"
        )
    print(json.dumps(summary, sort_keys=True), flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
