"""What one `binllm llm tune` run depends on (`TuneConfig`) and the card left beside its adapter (`AdapterCard`).

Kept apart from `tune.py` and `trainer.py` so both import it and neither imports the other. The field
defaults here are the only defaults: the `binllm llm tune` options default to None and fall back to them.

    python -c "from model_store.llm.tune_config import TuneConfig; print(TuneConfig.model_json_schema())"
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model_store.contract.fusion import ScoreFusion
from model_store.contract.prompts import PromptStyle

ADAPTER_CARD_FILENAME = "binllm_adapter.json"


class TuneConfig(BaseModel):
    """Everything one `binllm llm tune` run depends on; written as `config.json` in the output directory."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    base_model: str = Field(description="HF causal-LM directory to tune (default: converted SmolLM2).")
    train: str = Field(description="Training split file (papers' JSON lines or parquet).")
    valid: str = Field(description="Validation split file; its AUC drives early stopping.")
    out_dir: str = Field(description="Where the adapter, checkpoints, config and metrics go.")
    codes: str | None = Field(default=None, description="Codes directory; required by stage 2.")
    code_version: str | None = Field(default=None, description="Version of the codes used (filled in).")
    stages: tuple[int, ...] = Field(default=(1, 2), description="1 = text-only, 2 = with codes, in order.")
    epochs: int = Field(default=1, ge=1, description="Epochs per stage (upper bound; early stopping).")
    lr: float = Field(default=3e-4, gt=0, description="Peak AdamW learning rate of each stage.")
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="Linear warm-up share of a stage.")
    batch_size: int = Field(default=16, ge=1, description="Prompts per micro-batch.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    eval_batch_size: int = Field(default=64, ge=1)
    max_train_samples: int | None = Field(default=None, ge=1, description="Seeded subsample of train rows.")
    max_valid_samples: int | None = Field(default=None, ge=1, description="Seeded subsample of valid rows.")
    eval_every: int = Field(default=0, ge=0, description="Validate every N optimizer steps; 0 = per epoch.")
    patience: int = Field(default=2, ge=1, description="Validations without AUC gain before a stage stops.")
    select: Literal["best", "last"] = Field(
        default="best",
        description="The weights a stage ends with (and the run ships): 'best', those of the validation with "
        "the highest AUC (the papers' choice); 'last', those of the last step, where the cosine schedule has "
        "decayed to zero. When neighbouring validations differ by less than the validation sample's noise, "
        "'best' picks noise (and may drop most of the run's epochs); 'last' keeps all of the training.",
    )
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = Field(default=("q_proj", "v_proj"))
    lora_top_layers: int | None = Field(
        default=None,
        ge=1,
        description="Put LoRA on the top N decoder layers only (None = all): the frozen layers below need "
        "no backward pass.",
    )
    train_top_layers: int | None = Field(
        default=None,
        ge=1,
        description="Train the LoRA of the top N decoder layers only; the LoRA below keeps its starting weights "
        "(from --init-adapter), frozen and folded into the cached trunk. None = every LoRA layer trains. One "
        "adapter still ships: continuing a deep adapter costs only the top layers' backward pass.",
    )
    share_prefixes: bool = Field(
        default=True,
        description="Run each user prefix once per batch for all its rows (same loss, fewer tokens); "
        "False = whole-prompt batches.",
    )
    cache_trunk: bool = Field(
        default=True,
        description="Run the frozen layers below the LoRA layers once per prompt set and reuse their output "
        "in every epoch and validation (same numbers; ~2.3 KB per token of memory for SmolLM2).",
    )
    prompt_style: PromptStyle = Field(
        default_factory=lambda: PromptStyle(layout="serving", code_mode="hex"),
        description="Prompt wording; default: serving layout with hex codes.",
    )
    train_lora_with_projector: bool = Field(
        default=False,
        description="Stage 2 of the 'embeddings' encoding (CoLLM): train the LoRA with the projector. False = "
        "the LoRA keeps its stage-1 weights and only the projector trains (CoLLM's recipe).",
    )
    seed: int = 0
    unknown_item_share: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Seeded share of stage-2 train rows written with the unknown item code (needs the style's "
        "unknown_codes='learned'): ML-1M's train split has no cold item to learn that code from.",
    )
    init_adapter: str | None = Field(
        default=None, description="Adapter dir whose LoRA weights start the run (same r, modules, layers)."
    )
    oof_codes: str | None = Field(
        default=None,
        description="Out-of-fold codes of the train split (`binllm codes oof`, aligned to --codes): stage 2's "
        "train rows read the codes of a model that never saw them, in the prompt and in the residual's skip "
        "connection, so the LLM learns what the codes miss on new rows rather than on rows they were fitted "
        "to. Valid rows keep --codes.",
    )
    objective: Literal["p_yes", "residual", "flip"] = Field(
        default="p_yes",
        description="Stage-2 loss. 'p_yes': BCE on the Yes/No margin (the papers'). 'residual': BCE on "
        "w_llm * margin + w_code * code_logit + b, the codes' own logit as a skip connection, (w_llm, w_code, b) "
        "trained with the LoRA and starting at the codes' score; the trained weights ship as the model's fusion. "
        "'flip': residual plus BCE on the margin alone (FLIP, Wang et al., 2024).",
    )
    llm_weight_init: float = Field(
        default=0.0,
        description="Starting w_llm of the residual objectives (w_code = 1, b = 0): at 0 the first score is "
        "exactly the codes' own, and Adam moves w_llm off zero at the first step.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Autocast of forward passes: 'auto' = bf16 on CUDA and on CPUs that multiply bf16 "
        "natively (AMX, AVX512-BF16), fp32 elsewhere; weights, optimizer and margins stay fp32.",
    )
    bucket_by_length: bool = Field(
        default=True,
        description="Within each window of shuffled groups, batch groups of similar length together "
        "(less padding); the epoch order stays a pure function of the seed.",
    )
    trunk_cache_dir: str | None = Field(
        default=None,
        description="Keep the cached trunk on disk here (keyed by model, layers and prompts), so a resumed "
        "run does not recompute it; None = memory only.",
    )
    log_every: int = Field(
        default=50, ge=0, description="Log prompts/s, ETA and loss every N optimizer steps; 0 = never."
    )
    device: str | None = Field(default=None, description="'cuda', 'cpu', ...; None = CUDA when present.")
    keep_checkpoints: int = Field(default=2, ge=1)
    resume: bool = Field(default=False, description="Continue from the newest checkpoint in out_dir.")
    progress: bool = Field(default=True, description="Show tqdm progress bars.")

    @model_validator(mode="after")
    def _refuse_inconsistent(self) -> Self:
        if (
            not self.stages
            or any(s not in (1, 2) for s in self.stages)
            or list(self.stages) != sorted(set(self.stages))
        ):
            raise ValueError(f"stages must be (1,), (2,) or (1, 2), got {self.stages}")
        if 2 in self.stages and self.codes is None:
            raise ValueError("stage 2 needs --codes")
        if self.oof_codes is not None and 2 not in self.stages:
            raise ValueError("--oof-codes are codes of stage 2's train rows; stage 2 is not run")
        if self.objective != "p_yes" and 2 not in self.stages:
            raise ValueError(f"objective {self.objective!r} trains stage 2 (the codes' skip connection)")
        return self


class AdapterCard(BaseModel):
    """`binllm_adapter.json` beside a tuned adapter: how to prompt it and where it came from (for export)."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    base_model: str
    prompt_style: PromptStyle
    with_codes: bool = Field(description="The last stage trained on prompts with codes.")
    code_version: str | None = None
    stages: tuple[int, ...]
    metrics: dict[str, Any] = Field(default_factory=dict)
    fusion: ScoreFusion | None = Field(
        default=None, description="The served blend with the code score (`binllm llm blend --adapter`)."
    )
