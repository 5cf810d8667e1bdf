"""Score any split in the papers' format with a model (and codes) and report AUC, UAUC, logloss, n, n_cold.

The model is a servable directory (exported, with `binllm.json`), or any causal-LM directory plus an optional
LoRA adapter from `binllm llm tune`. Prompts are built exactly as in tuning; a row whose user or item the
codes have never seen gets the text-only wording (as the service does for cold requests) and is counted in
`n_cold`, so a split the model and codes never saw is evaluated rather than refused (BinLLM, Zhang et al.,
ACL 2024: AUC/UAUC protocol of CoLLM).

Scores are what `/predict` returns for the same rows: the model is loaded as the embedded service loads it
(`PromptScorer.from_dir`: weights in the dtype of `dtype`, the service's `BINLLM_LOCAL__DTYPE`, and the Yes/No
tokens of `binllm.json`), each (user, history) prefix with its candidates goes through the service's
`PromptScorer.score_groups`, and the manifest's blend is applied with the service's warm/cold rule. No autocast:
tuning's validation scores under bf16 autocast (`trainer.autocast_for`) on CPUs with AVX512-BF16/AMX, which
rounds every margin to bf16 (tying near-equal candidates of one user) over fp32 weights, a computation neither
the fp32 nor the bf16 service runs. What is left apart is how rows are batched (the service batches concurrent
requests), worth a float rounding: tests/unit/model_store/llm/test_eval_matches_service.py.

    binllm llm eval --model artifacts/llm/merged --codes artifacts/codes \\
        --split ../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from peft import PeftModel
from tqdm.auto import tqdm

from model_store.codes.features import CollabFeatures
from model_store.contract.fusion import ScoreFusion
from model_store.contract.prompts import PromptStyle
from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.data.io import read_split
from model_store.llm.dataset import CodeLookup, PromptSet, build_prompts
from model_store.llm.models import load_causal_lm, prepare_for_serving
from model_store.llm.scorer import BATCH_SIZE, ROWS_PER_PREFIX_PASS, PromptScorer, weights_name
from model_store.llm.soft_tokens import Projector, has_projector, install_projector
from model_store.llm.tune import read_adapter_card
from model_store.metrics import evaluate_scores
from model_store.paired_bootstrap import paired_bootstrap
from model_store.small_sample import is_small_sample, small_sample_note

# Rows per scoring call on a CPU: a call's prefixes run as one batch, and ~280 users' prefixes at once (512 rows)
# overflow the CPU's caches; calls of 64 rows (what bench/bf16_quality.py's runs use) scored ML-1M valid rows
# markedly faster on a 2-core CPU. A GPU keeps ROWS_PER_PREFIX_PASS.
CPU_ROWS_PER_CALL = 64


@dataclass(frozen=True)
class PromptingPlan:
    """How a model wants to be prompted: the style and whether its prompts carry codes."""

    style: PromptStyle
    with_codes: bool
    code_version: str | None


def prompting_plan(model_dir: Path, adapter_dir: Path | None, codes: CodeLookup | None) -> PromptingPlan:
    """Read the plan from the adapter card or the exported manifest; otherwise assume codes when given."""
    card = read_adapter_card(adapter_dir) if adapter_dir is not None else None
    if card is not None:
        return PromptingPlan(card.prompt_style, card.with_codes, card.code_version)
    manifest_path = model_dir / MANIFEST_FILENAME
    if adapter_dir is None and manifest_path.is_file():
        manifest = ModelManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        return PromptingPlan(manifest.prompt_style, manifest.with_codes, manifest.code_version)
    return PromptingPlan(PromptStyle(), codes is not None, None)


def load_scorer(
    model_dir: Path, adapter_dir: Path | None, device: str | None, dtype: str = "float32"
) -> PromptScorer:
    """The service's scorer over the model; `dtype` is "auto", "float32", "bfloat16" or "int8" (`serving_engine`).

    A servable directory loads exactly as the embedded service loads it (`PromptScorer.from_dir`). An adapter
    is merged into its base in fp32 first (plain weights score faster than LoRA layers), then cast.
    """
    if adapter_dir is None:
        return PromptScorer.from_dir(model_dir, device=device, dtype=dtype)
    model, tokenizer = load_causal_lm(model_dir, dtype=torch.float32, device=device)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    prepare_for_serving(model, dtype)
    if has_projector(adapter_dir):
        install_projector(model, Projector.from_dir(adapter_dir))
    return PromptScorer(model, tokenizer)


def prefix_text_groups(data: PromptSet) -> tuple[list[tuple[str, list[str]]], list[list[int]]]:
    """The rows as the service's (prefix, suffixes) groups, one per distinct user prefix, and their rows,
    shortest prefix text first.

    A (user, history) prefix with its candidates is what one `/predict` request renders for that user
    (`app.service.plan_prompts`: one group per wording, the shared prefix rendered once). The prefixes of a
    call run as one left-padded batch, so calls of similar lengths pad little.
    """
    rows_of: dict[str, list[int]] = {}
    for row, prefix in enumerate(data.prefixes):
        rows_of.setdefault(prefix, []).append(row)
    by_length = sorted(rows_of.items(), key=lambda item: len(item[0]))
    groups = [(prefix, [data.prompts[row][len(prefix) :] for row in rows]) for prefix, rows in by_length]
    return groups, [rows for _, rows in by_length]


def score_rows(
    scorer: PromptScorer,
    data: PromptSet,
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """[N] P(Yes) of every row of `data` through `scorer.score_groups`, the call the service makes.

    Groups go in calls of whole groups, one progress step each: about `ROWS_PER_PREFIX_PASS` rows on a GPU,
    `CPU_ROWS_PER_CALL` on a CPU; `batch_size` is the candidates per remainder pass (default: the service's).
    """
    groups, rows = prefix_text_groups(data)
    per_call = CPU_ROWS_PER_CALL if scorer.device.type == "cpu" else ROWS_PER_PREFIX_PASS
    size = BATCH_SIZE if batch_size is None else batch_size
    return score_groups_of_rows(
        scorer, groups, rows, len(data), batch_size=size, rows_per_call=per_call, progress=progress
    )


def score_groups_of_rows(
    scorer: PromptScorer,
    groups: Sequence[tuple[str, list[str]]],
    rows: Sequence[Sequence[int]],
    n_rows: int,
    *,
    batch_size: int,
    rows_per_call: int,
    progress: bool = False,
) -> np.ndarray:
    """[n_rows] P(Yes) of the rows of `groups` (`rows[k]`: group k's rows), scored in calls of whole groups
    holding about `rows_per_call` rows, one progress step each; rows of no group are NaN."""
    p_yes = np.full(n_rows, np.nan, dtype=np.float64)  # [N]
    calls = calls_of([len(suffixes) for _, suffixes in groups], rows_per_call)
    for call in tqdm(calls, desc="eval", disable=not progress, leave=False):
        scored = scorer.score_groups([groups[index] for index in call], batch_size=batch_size)
        for index, scores in zip(call, scored, strict=True):
            p_yes[list(rows[index])] = scores
    return p_yes


def calls_of(sizes: Sequence[int], rows_per_call: int = ROWS_PER_PREFIX_PASS) -> list[range]:
    """Consecutive runs of whole groups holding at most `rows_per_call` rows (a bigger group goes alone)."""
    calls, start, rows = [], 0, 0
    for index, size in enumerate(sizes):
        if rows and rows + size > rows_per_call:
            calls.append(range(start, index))
            start, rows = index, 0
        rows += size
    if start < len(sizes):
        calls.append(range(start, len(sizes)))
    return calls


@dataclass(frozen=True)
class SplitScores:
    """Per-row scores of one split: the LLM's P(Yes), the served score, and how each row was prompted."""

    data: PromptSet
    p_yes: np.ndarray  # [N] the LLM's P(Yes)
    score: np.ndarray  # [N] what /predict returns: P(Yes), or the manifest's blend
    warm: np.ndarray  # [N] bool: prompted with the user's and the item's own codes (the blend's warm weights)
    not_cold: np.ndarray | None  # [N] the split's not_cold column when it has one
    metrics: dict[str, Any]
    codes_alone: np.ndarray | None = None  # [N] the codes' own click probability, when the codes can score


def read_fusion(model_dir: Path, adapter_dir: Path | None) -> ScoreFusion | None:
    """The blend declared in an exported model's manifest (adapters and bare models have none)."""
    manifest_path = model_dir / MANIFEST_FILENAME
    if adapter_dir is not None or not manifest_path.is_file():
        return None
    return ModelManifest.model_validate_json(manifest_path.read_text(encoding="utf-8")).fusion


def subset_metrics(data: PromptSet, scores: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """AUC/UAUC/logloss/n on the rows in `mask`; NaN figures where a label is missing there."""
    uids = np.asarray(data.uids)[mask]
    labels = np.asarray(data.labels)[mask]
    if len(set(labels.tolist())) < 2:
        return {"auc": float("nan"), "uauc": float("nan"), "n": int(mask.sum())}
    return dict(evaluate_scores(uids, labels, scores[mask]))


def warm_rows(data: PromptSet, prompt_codes: CodeLookup | None) -> np.ndarray:
    """[N] bool: rows prompted with their user's and item's own codes, i.e. not listed in `/predict`'s `cold`.

    Text-only prompts and prompts carrying a learned unknown code are cold; the blend weighs them apart.
    """
    if prompt_codes is None:
        return np.zeros(len(data), dtype=bool)
    return np.array(
        [
            prompt_codes.user_code(u) is not None and prompt_codes.item_code(i) is not None
            for u, i in zip(data.uids, data.iids, strict=True)
        ],
        dtype=bool,
    )


def blended_scores(
    fusion: ScoreFusion, p_yes: np.ndarray, data: PromptSet, codes: CodeLookup | None, warm: np.ndarray
) -> np.ndarray:
    """The blend of each row's P(Yes) with its code score (unknown ids use the blend's unknown codes)."""
    return np.array(
        [
            fusion.blend(
                float(p),
                codes.user_code(u) if codes is not None else None,
                codes.item_code(i) if codes is not None else None,
                warm=bool(w),
            )
            for p, u, i, w in zip(p_yes, data.uids, data.iids, warm, strict=True)
        ]
    )


@dataclass(frozen=True)
class SplitPrompts:
    """A split's (kept) rows as the model wants them prompted: what `score_split` and bench/bf16_quality.py score."""

    plan: PromptingPlan
    prompt_codes: CodeLookup | None  # the codes the prompts carry: None for a text-only model
    table: pa.Table  # the whole split as read
    data: PromptSet  # the kept rows' prompts, in file order


def split_prompts(
    model_dir: Path,
    split: str | Path,
    *,
    adapter_dir: Path | None = None,
    codes: CodeLookup | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    style_override: dict[str, Any] | None = None,
    features: CollabFeatures | None = None,
) -> SplitPrompts:
    """Prompts of a split in the model's style; `max_samples` keeps whole (user, history) groups, seeded.
    A CoLLM model (encoding 'embeddings') needs `features`, the codes directory's CF embeddings."""
    plan = prompting_plan(model_dir, adapter_dir, codes)
    prompt_codes = codes if plan.with_codes else None
    style = plan.style.model_copy(update=style_override or {})
    if prompt_codes is not None and prompt_codes.bits != style.bits:
        raise ValueError(f"codes have {prompt_codes.bits} bits but the model was tuned on {style.bits}")
    soft = features if prompt_codes is not None and style.encoding == "embeddings" else None
    if prompt_codes is not None and style.encoding == "embeddings" and soft is None:
        raise ValueError(
            "a CoLLM model (encoding 'embeddings') needs the CF embeddings of its codes directory"
        )
    table = read_split(split)
    data = build_prompts(
        table,
        codes=prompt_codes,
        style=style,
        max_samples=max_samples,
        seed=seed,
        sample_groups=True,
        features=soft,
    )
    return SplitPrompts(replace(plan, style=style), prompt_codes, table, data)


def score_split(
    model_dir: str | Path,
    split: str | Path,
    *,
    adapter_dir: str | Path | None = None,
    codes: CodeLookup | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | None = None,
    dtype: str = "float32",
    progress: bool = True,
    use_fusion: bool = True,
    style_override: dict[str, Any] | None = None,
    features: CollabFeatures | None = None,
) -> SplitScores:
    """Score every (kept) row of a split exactly as the service would, prefixes shared across users.

    `max_samples` keeps whole (user, history) groups (see `build_prompts`), so a subsample still shares
    prefixes. `dtype` ("auto", "float32", "bfloat16", "int8") is the service's `BINLLM_LOCAL__DTYPE`. Metrics:
    auc/uauc/logloss/n of the served score, `warm`/`cold` by the split's `not_cold` column, `p_yes` (the
    LLM alone) when a blend is served, n_cold, with_codes, code_version, and `dtype`, the weights' dtype
    ("int8" for the int8 engine).
    """
    model_path = Path(model_dir)
    adapter_path = Path(adapter_dir) if adapter_dir is not None else None
    prompted = split_prompts(
        model_path,
        split,
        adapter_dir=adapter_path,
        codes=codes,
        max_samples=max_samples,
        seed=seed,
        style_override=style_override,
        features=features,
    )
    plan, prompt_codes, table, data = prompted.plan, prompted.prompt_codes, prompted.table, prompted.data
    scorer = load_scorer(model_path, adapter_path, device, dtype)
    p_yes = score_rows(scorer, data, batch_size=batch_size, progress=progress)  # [N]
    warm = warm_rows(data, prompt_codes)
    fusion = read_fusion(model_path, adapter_path) if use_fusion else None
    score = blended_scores(fusion, p_yes, data, codes, warm) if fusion is not None else p_yes
    not_cold = None
    if "not_cold" in table.column_names and data.rows is not None:
        not_cold = np.asarray(table.column("not_cold").to_numpy())[np.asarray(data.rows)].astype(bool)
    metrics: dict[str, Any] = dict(evaluate_scores(data.uids, data.labels, score))
    if not_cold is not None:
        metrics["warm"] = subset_metrics(data, score, not_cold)
        metrics["cold"] = subset_metrics(data, score, ~not_cold)
    if fusion is not None:
        metrics["p_yes"] = dict(evaluate_scores(data.uids, data.labels, p_yes))
        if not_cold is not None:
            metrics["p_yes"]["warm"] = subset_metrics(data, p_yes, not_cold)
            metrics["p_yes"]["cold"] = subset_metrics(data, p_yes, ~not_cold)
    code_scores = getattr(codes, "score", None)
    alone = None
    if code_scores is not None:  # the codes alone on the very same rows, for comparison
        alone = np.asarray(code_scores(np.asarray(data.uids), np.asarray(data.iids))[0])
        metrics["codes_only"] = dict(evaluate_scores(data.uids, data.labels, alone))
        if not_cold is not None:
            metrics["codes_only"]["warm"] = subset_metrics(data, alone, not_cold)
            metrics["codes_only"]["cold"] = subset_metrics(data, alone, ~not_cold)
        metrics["vs_codes"] = against_codes(data, alone, score)
    if len(data) < table.num_rows or is_small_sample(len(data)):
        metrics["sample"] = sample_label(len(data), table.num_rows)
    metrics["score"] = "blend" if fusion is not None else "p_yes"
    # Rows a code-tuned model saw in the text-only wording: all of them when no codes were given.
    metrics["n_cold"] = (data.n_cold if prompt_codes is not None else len(data)) if plan.with_codes else 0
    metrics["with_codes"] = plan.with_codes
    metrics["code_version"] = prompt_codes.version if prompt_codes is not None else None
    if (
        plan.code_version is not None
        and prompt_codes is not None
        and prompt_codes.version != plan.code_version
    ):
        metrics["warning"] = f"codes version {prompt_codes.version} != tuned with {plan.code_version}"
    metrics["dtype"] = weights_name(scorer.model)
    return SplitScores(data, p_yes, score, warm, not_cold, metrics, alone)


def against_codes(data: PromptSet, codes_alone: np.ndarray, served: np.ndarray) -> dict[str, Any]:
    """Served score minus the codes alone on the same rows: the AUC and UAUC differences with their paired
    bootstrap 95% interval (1,000 resamples of users, seed 0). A lower bound above 0 says the LLM adds to
    its codes beyond what resampling the users could explain."""
    intervals = paired_bootstrap(data.uids, data.labels, codes_alone, served, resamples=1000, seed=0)
    return {name: interval.as_dict() for name, interval in intervals.items()}


def sample_label(kept: int, total: int) -> str:
    """What a figure from `kept` of `total` rows is: the whole split, or a sample (and whether too small)."""
    label = "whole split" if kept == total else f"sample of {kept} of {total} rows, not the whole split"
    note = small_sample_note(kept)
    return f"{label} {note}".strip()


def evaluate_split(model_dir: str | Path, split: str | Path, **options: Any) -> dict[str, Any]:
    """The metrics line of `binllm llm eval` (see `score_split`)."""
    return score_split(model_dir, split, **options).metrics
