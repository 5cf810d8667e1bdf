"""Two-stage LoRA tuning of the LLM on click prompts (BinLLM, Zhang et al., ACL 2024, section 3.3).

Stage 1 tunes a LoRA adapter on text-only prompts (TALLRec wording); stage 2 continues the SAME adapter on
prompts that carry the user's and the item's binary codes. The loss is binary cross-entropy with logits on
z_yes - z_no at the last prompt position, which is exactly what serving returns (sigmoid of that margin);
each stage stops early when the validation AUC stops improving and leaves its best adapter behind.

    binllm llm tune --train ../shared/data/ml-1m-collm/train_ood2.jsonl.gz \\
        --valid ../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz --codes artifacts/codes --out artifacts/llm

Output: `config.json` (this `TuneConfig`), `adapter/` (final LoRA + `binllm_adapter.json`), `stage{n}/best/`,
`metrics.json`, `checkpoints/` (for `--resume`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

from model_store.codes.codebook import load_codes
from model_store.codes.features import CollabFeatures
from model_store.codes.out_of_fold import OutOfFoldCodes, load_out_of_fold
from model_store.contract.fusion import CodeScore, ScoreFusion
from model_store.data.io import read_split
from model_store.llm.answer import find_answer_tokens
from model_store.llm.checkpoint import (
    CHECKPOINTS_DIRNAME,
    TrainState,
    list_checkpoints,
    load_adapter_weights,
    read_state,
)
from model_store.llm.dataset import CodeLookup, build_prompts, style_for
from model_store.llm.distributed import SINGLE, Ranks, barrier, rank_device, setup, teardown
from model_store.llm.fusion_head import FusionHead
from model_store.llm.models import default_device, load_causal_lm
from model_store.llm.soft_tokens import Projector, install_projector, soft_embedding
from model_store.llm.trainer import StageTrainer
from model_store.llm.tune_config import ADAPTER_CARD_FILENAME, AdapterCard, TuneConfig

CONFIG_FILENAME = "config.json"
METRICS_FILENAME = "metrics.json"
FINAL_ADAPTER_DIRNAME = "adapter"

__all__ = [
    "ADAPTER_CARD_FILENAME",
    "CONFIG_FILENAME",
    "AdapterCard",
    "TuneConfig",
    "read_adapter_card",
    "tune",
]


def write_json(path: Path, obj: Any) -> None:
    """Write pretty JSON, parents created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")


def lora_layers(model: torch.nn.Module, top_layers: int | None) -> list[int] | None:
    """Indices of the top `top_layers` decoder layers (None = every layer gets LoRA)."""
    if top_layers is None:
        return None
    n_layers = int(model.config.num_hidden_layers)  # type: ignore[union-attr,arg-type]
    return list(range(max(0, n_layers - top_layers), n_layers))


def attach_lora(model: torch.nn.Module, config: TuneConfig) -> PeftModel:
    """Wrap the base model with a fresh, seeded LoRA adapter (B = 0, so it starts as the base model)."""
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=lora_layers(model, config.lora_top_layers),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(config.seed)
    peft_model = get_peft_model(model, lora)
    if config.init_adapter is not None:
        load_adapter_weights(peft_model, Path(config.init_adapter))
    trained = lora_layers(model, config.train_top_layers)
    if trained is not None:
        for name, parameter in peft_model.named_parameters():
            layer = decoder_layer_of(name)
            if parameter.requires_grad and layer is not None and layer not in trained:
                parameter.requires_grad_(False)
        freeze_lora_dropout(peft_model, trained)
    return peft_model


def freeze_lora_dropout(model: PeftModel, trained: list[int]) -> None:
    """No LoRA dropout in the decoder layers outside `trained`: their LoRA is a fixed part of the model.

    Dropout regularises weights being learned. On a frozen LoRA, in train mode, it only adds noise to every
    step's input of the layers above; worse, the cached trunk (`model_store.llm.trunk`) computed in train mode
    would keep one draw of that noise for the whole run, and validate on inputs the exported model never sees.
    """
    for name, module in model.named_modules():
        layer = decoder_layer_of(f"{name}.")
        if isinstance(module, LoraLayer) and layer is not None and layer not in trained:
            for adapter in list(module.lora_dropout.keys()):
                module.lora_dropout[adapter] = torch.nn.Identity()


def decoder_layer_of(parameter_name: str) -> int | None:
    """The decoder layer index in a parameter name ('...layers.27.mlp...' -> 27), None outside the layers."""
    match = re.search(r"\.layers\.(\d+)\.", parameter_name)
    return int(match.group(1)) if match else None


def resume_point(
    config: TuneConfig, model: PeftModel, main_out: Path | None = None
) -> tuple[TrainState, Path | None]:
    """The state to start from, and the checkpoint whose optimizer must be restored (None = fresh stage).

    Under torchrun every rank resumes from rank 0's checkpoints (`main_out`): all ranks hold the same weights.
    """
    checkpoints = list_checkpoints(main_out or Path(config.out_dir)) if config.resume else []
    if not checkpoints:
        return TrainState(), None
    latest = checkpoints[-1]
    state = read_state(latest)
    load_adapter_weights(model, latest / "adapter")
    if not state.stage_done:
        return state, latest
    return state.next_stage(), None


def load_codebook(codes_dir: str) -> CodeLookup:
    """The codes directory written by `binllm codes train` (`model_store.codes.codebook.load_codes`)."""
    codebook: CodeLookup = load_codes(codes_dir)
    return codebook


def tune(
    config: TuneConfig, *, codes: CodeLookup | None = None, features: CollabFeatures | None = None
) -> AdapterCard:
    """Run the configured stages; returns the card of the final adapter (also written to disk).

    Under `torchrun --nproc_per_node N` the N ranks tune one adapter data-parallel (`distributed.py`); rank 0
    writes the outputs, rank r its checkpoints under `OUT/.rank{r}/` (removed after a finished run).
    """
    device_name = config.device or default_device()
    ranks = setup(device_name)
    main_out = Path(config.out_dir)
    if not ranks.main:
        config = config.model_copy(update={"out_dir": str(main_out / f".rank{ranks.rank}")})
    try:
        card = _tune(config, codes, rank_device(device_name, ranks), ranks, main_out, features)
        barrier(ranks)
        if ranks.main:
            for scratch in main_out.glob(".rank[0-9]*"):
                shutil.rmtree(scratch, ignore_errors=True)
        return card
    finally:
        teardown(ranks)


def _tune(
    config: TuneConfig,
    codes: CodeLookup | None,
    device_name: str,
    ranks: Ranks = SINGLE,
    main_out: Path | None = None,
    features: CollabFeatures | None = None,
) -> AdapterCard:
    out_dir = Path(config.out_dir)
    if codes is None and config.codes is not None:
        codes = load_codebook(config.codes)
    soft = config.prompt_style.encoding == "embeddings" and 2 in config.stages
    if soft and features is None:
        assert config.codes is not None  # stage 2 needs --codes (TuneConfig)
        features = CollabFeatures.from_codes_dir(config.codes)
    if codes is not None and config.code_version is None:
        config = config.model_copy(update={"code_version": codes.version})
    style = style_for(codes, config.prompt_style)
    config = config.model_copy(update={"prompt_style": style})
    out_dir.mkdir(parents=True, exist_ok=True)
    if not config.resume:  # a fresh run must not pick up another run's checkpoints or best adapters
        for stale in [out_dir / CHECKPOINTS_DIRNAME, *out_dir.glob("stage[0-9]")]:
            shutil.rmtree(stale, ignore_errors=True)
    write_json(out_dir / CONFIG_FILENAME, config.model_dump(mode="json"))

    code_score = scored_codes(codes) if config.objective != "p_yes" else None
    device = torch.device(device_name)
    base, tokenizer = load_causal_lm(config.base_model, dtype=torch.float32, device=str(device))
    model = attach_lora(base, config)
    answer = find_answer_tokens(tokenizer)
    train_table, valid_table = read_split(config.train), read_split(config.valid)
    train_row_codes = out_of_fold_codes(config, codes, train_table)
    state, optimizer_from = resume_point(config, model, main_out)
    head = resumed_head(config, state, main_out)
    if soft:
        assert features is not None
        attach_projector(model, features, config, main_out)
    while state.stage_index < len(config.stages):
        stage = config.stages[state.stage_index]
        stage_codes = codes if stage == 2 else None
        train, valid = (
            build_prompts(
                table,
                codes=stage_codes,
                style=style,
                max_samples=limit,
                seed=config.seed,
                sample_groups=config.share_prefixes,
                unknown_item_share=hidden if stage_codes is not None else 0.0,
                features=features if stage_codes is not None else None,
                codes_of_row=per_row if stage_codes is not None else None,
            )
            for table, limit, hidden, per_row in (
                (train_table, config.max_train_samples, config.unknown_item_share, train_row_codes),
                (valid_table, config.max_valid_samples, 0.0, None),
            )
        )
        if soft and stage == 2 and not config.train_lora_with_projector:
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.requires_grad_(False)  # CoLLM's stage 2: the projector alone learns
        trainer = StageTrainer(config, model, tokenizer, answer, stage, train, valid, ranks, code_score)
        state = trainer.run(state, optimizer_from)
        head = trainer.head or head
        write_stage_card(config, stage, state, fusion_of(head, code_score, config))
        optimizer_from = None
        state = state.next_stage()
    return finish(config, model, state, world=ranks.world, fusion=fusion_of(head, code_score, config))


def out_of_fold_codes(
    config: TuneConfig, codes: CodeLookup | None, train_table: pa.Table
) -> OutOfFoldCodes | None:
    """The `--oof-codes` of this very train split, aligned to these very codes, or None without the option."""
    if config.oof_codes is None:
        return None
    folds = load_out_of_fold(config.oof_codes)
    folds.check_split(train_table)
    reference = folds.metrics.get("reference_version")
    if codes is None or reference != codes.version:
        raise ValueError(
            f"--oof-codes were aligned to codes {reference}, not to --codes "
            f"{codes.version if codes is not None else None}: rerun `binllm codes oof --codes` on them"
        )
    if config.prompt_style.encoding != "codes":
        raise ValueError("--oof-codes need the 'codes' encoding (text codes)")
    return folds


def attach_projector(
    model: PeftModel, features: CollabFeatures, config: TuneConfig, main_out: Path | None
) -> Projector:
    """CoLLM's projector in front of the input embedding, reading `features`' table: the newest checkpoint's
    when resuming (a finished run finished again ships the trained one), else the init adapter's when it is a
    CoLLM adapter (a run that continues another), else seeded fresh."""
    torch.manual_seed(config.seed + 1)
    projector = Projector(features.width, int(model.config.hidden_size))
    checkpoints = list_checkpoints(main_out or Path(config.out_dir)) if config.resume else []
    if checkpoints:
        projector.load(checkpoints[-1] / "adapter")
    elif config.init_adapter is not None:
        projector.load(Path(config.init_adapter))  # no projector there (a BinLLM adapter): stays fresh
    install_projector(model, projector)  # each prompt set brings its table (trainer.grouped_prompts)
    return projector


def scored_codes(codes: CodeLookup | None) -> CodeScore:
    """The codes' own score, which the residual objectives add the LLM to (a `CodeBook` has it)."""
    code_score = getattr(codes, "code_score", None)
    if code_score is None:
        raise ValueError("the residual objectives need --codes with a code score (binllm codes train)")
    score: CodeScore = code_score()
    return score


def resumed_head(config: TuneConfig, state: TrainState, main_out: Path | None) -> FusionHead | None:
    """The fusion head of a run resumed past the end of its last stage (a finished run finished again)."""
    checkpoints = list_checkpoints(main_out or Path(config.out_dir)) if config.resume else []
    if config.objective == "p_yes" or not checkpoints or state.stage_index < len(config.stages):
        return None
    head = FusionHead(config.llm_weight_init)
    return head if head.load(checkpoints[-1] / "adapter") else None


def fusion_of(
    head: FusionHead | None, code_score: CodeScore | None, config: TuneConfig
) -> ScoreFusion | None:
    """The trained head as the fusion the exported model declares (None for the P(Yes) objective)."""
    if head is None or code_score is None:
        return None
    return head.to_fusion(
        code_score, fitted_on=f"trained jointly with the LoRA (objective {config.objective})"
    )


def write_stage_card(config: TuneConfig, stage: int, state: TrainState, fusion: ScoreFusion | None) -> None:
    """A card beside the stage's best adapter, so `llm eval --adapter stageN/best` prompts it as it was tuned."""
    best_dir = Path(config.out_dir) / f"stage{stage}" / "best"
    if not best_dir.is_dir():
        return
    card = AdapterCard(
        base_model=config.base_model,
        prompt_style=config.prompt_style,
        with_codes=stage == 2,
        code_version=config.code_version if stage == 2 else None,
        stages=tuple(s for s in config.stages if s <= stage),
        metrics={"valid_auc": state.stage_results.get(f"stage{stage}", {}).get("best_auc")},
        fusion=fusion if stage == 2 else None,
    )
    write_json(best_dir / ADAPTER_CARD_FILENAME, card.model_dump(mode="json"))


def finish(
    config: TuneConfig,
    model: PeftModel,
    state: TrainState,
    *,
    world: int = 1,
    fusion: ScoreFusion | None = None,
) -> AdapterCard:
    """Save the final adapter with its card (and trained fusion), and metrics.json (validations, losses)."""
    out_dir = Path(config.out_dir)
    final_dir = out_dir / FINAL_ADAPTER_DIRNAME
    shutil.rmtree(final_dir, ignore_errors=True)
    model.save_pretrained(str(final_dir))
    soft = soft_embedding(model)
    if soft is not None:
        soft.projector.save(final_dir)
    last_stage = config.stages[-1]
    results = state.stage_results.get(f"stage{last_stage}", {})
    evals = results.get("evals") or []
    last_auc = evals[-1]["auc"] if evals else None  # the last validation scored the last step's weights
    card = AdapterCard(
        base_model=config.base_model,
        prompt_style=config.prompt_style,
        with_codes=last_stage == 2,
        code_version=config.code_version if last_stage == 2 else None,
        stages=config.stages,
        metrics={
            "valid_auc": results.get("best_auc") if config.select == "best" else last_auc,
            "objective": config.objective,
            "selected": config.select,
        },
        fusion=fusion,
    )
    write_json(final_dir / ADAPTER_CARD_FILENAME, card.model_dump(mode="json"))
    metrics = {"stages": state.stage_results, "losses": state.losses, "world_size": world}
    write_json(out_dir / METRICS_FILENAME, metrics)
    return card


def read_adapter_card(adapter_dir: str | Path) -> AdapterCard | None:
    """The card beside an adapter, if it was written by `tune`."""
    path = Path(adapter_dir) / ADAPTER_CARD_FILENAME
    if not path.is_file():
        return None
    return AdapterCard.model_validate_json(path.read_text(encoding="utf-8"))
