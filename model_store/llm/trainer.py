"""One tuning stage: shuffled micro-batches, gradient accumulation, validation, early stopping, checkpoints.

Rows are grouped by their user prefix and a micro-batch is a run of whole groups (shuffled by group), so
each prefix runs once per batch (`model_store.llm.grouped`); `share_prefixes=False` makes every row its own
group with no shared prefix, i.e. plain whole-prompt batches with the same loss.

The loss is `BCEWithLogits(z_yes - z_no, label)` at the last prompt position: the served score is the sigmoid
of the same margin, so tuning optimises exactly what the service returns (BinLLM / TALLRec train the
language-model loss on the answer word; for a two-way answer the margin form is the same objective without
the rest of the vocabulary). Used by `model_store.llm.tune.tune`, one instance per stage.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from model_store.contract.fusion import CodeScore
from model_store.llm.answer import AnswerTokens
from model_store.llm.checkpoint import (
    ADAPTER_DIRNAME,
    Sidecar,
    TrainState,
    load_adapter_weights,
    load_optimizer_state,
    save_checkpoint,
)
from model_store.llm.dataset import PromptSet
from model_store.llm.distributed import SINGLE, Ranks, all_reduce_gradients
from model_store.llm.fusion_head import FusionHead, residual_loss
from model_store.llm.grouped import (
    PrefixGroup,
    batches_of_groups,
    group_rows,
    make_group,
    ordered_margins,
    shuffled_groups,
)
from model_store.llm.models import cpu_has_bf16
from model_store.llm.progress import ThroughputLog
from model_store.llm.soft_tokens import embedding_table, encode_prompts, soft_embedding
from model_store.llm.trunk import TrunkStates, frozen_layers
from model_store.llm.trunk_store import cached_trunk
from model_store.llm.tune_config import TuneConfig
from model_store.metrics import evaluate_scores


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether forward passes autocast to bf16: 'bf16', or 'auto' on CUDA and CPUs with native bf16."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def autocast_for(device: torch.device, precision: str = "auto") -> AbstractContextManager[Any]:
    """bf16 autocast where `uses_bf16` says so (weights stay fp32), plain fp32 elsewhere.

    Tests that compare two code paths for equal numbers pin precision='fp32': under bf16 two exact
    equivalents differ by rounding, and whether 'auto' means bf16 depends on the CPU that runs them.
    """
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for padding (masked out everywhere): pad, else end-of-sequence, else 0."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad) if pad is not None else 0


@dataclass(frozen=True)
class GroupedPrompts:
    """A prompt set tokenised once: its rows grouped by user prefix, and the CF embeddings its soft tokens
    read (CoLLM prompts; None for text and code prompts)."""

    groups: list[PrefixGroup]
    table: torch.Tensor | None = None


def grouped_prompts(
    tokenizer: PreTrainedTokenizerBase, data: PromptSet, *, share_prefixes: bool = True
) -> GroupedPrompts:
    """The prompt set's rows grouped by user prefix (tokenised once, `soft_tokens.encode_prompts`).

    `share_prefixes=False` keeps the same groups (so the same batches) but runs every prompt whole: the
    reference that the shared path must match.
    """
    encoded = encode_prompts(tokenizer, data.prompts)
    token_ids = encoded.ids
    groups = [make_group(token_ids, rows) for rows in group_rows(data.prefixes)]
    if not share_prefixes:
        groups = [
            PrefixGroup((), tuple(tuple(token_ids[row]) for row in group.rows), group.rows)
            for group in groups
        ]
    return GroupedPrompts(groups, encoded.table)


def prefix_groups(
    tokenizer: PreTrainedTokenizerBase, data: PromptSet, *, share_prefixes: bool = True
) -> list[PrefixGroup]:
    """`grouped_prompts`' groups, for prompts without soft tokens."""
    return grouped_prompts(tokenizer, data, share_prefixes=share_prefixes).groups


def score_margins(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    data: PromptSet,
    answer: AnswerTokens,
    *,
    batch_size: int,
    progress: bool = False,
) -> np.ndarray:
    """Margins for every prompt of `data`, in order (evaluation), prefixes shared."""
    grouped = grouped_prompts(tokenizer, data)
    with embedding_table(model, grouped.table):
        return score_groups(
            model, grouped.groups, len(data), answer, pad_token_id(tokenizer), batch_size, progress
        )


@torch.no_grad()
def score_groups(
    model: torch.nn.Module,
    groups: list[PrefixGroup],
    n_rows: int,
    answer: AnswerTokens,
    pad_id: int,
    batch_size: int,
    progress: bool = False,
    trunk: TrunkStates | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Margins of the `n_rows` rows that `groups` cover, in row order; `trunk` skips the frozen layers."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.zeros(n_rows, dtype=np.float32)
    batches = list(batches_of_groups(groups, batch_size))
    for batch in tqdm(batches, desc="valid", disable=not progress, leave=False):
        with autocast_for(device, precision):
            margins, rows = ordered_margins(model, batch, answer, pad_id, trunk)
        out[rows.numpy()] = margins.float().cpu().numpy()
    model.train(was_training)
    return out


def validation_metrics(scores: np.ndarray, data: PromptSet) -> dict[str, Any]:
    """AUC/UAUC/logloss of logits (margins, or fused logits) on a prompt set; NaN AUC for one label."""
    probabilities = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
    try:
        metrics: dict[str, Any] = dict(evaluate_scores(data.uids, data.labels, probabilities))
    except ValueError:
        metrics = {"auc": float("nan"), "uauc": float("nan"), "n": len(data)}
    metrics["n_cold"] = data.n_cold
    return metrics


def bucketed(
    groups: list[PrefixGroup], rows_per_batch: int, seed: Sequence[int], window: int = 64
) -> list[list[PrefixGroup]]:
    """Micro-batches of shuffled groups, each window of `window` batches sorted by prefix length first.

    Groups of similar length share a batch (less padding in the left-padded prefix pass), while the windows
    keep the epoch close to a random order; batch order is shuffled again. A pure function of `seed`.
    """
    order = shuffled_groups(groups, seed)
    span = window * rows_per_batch
    batches: list[list[PrefixGroup]] = []
    start, size = 0, 0
    for end, group in enumerate(order, start=1):
        size += len(group.rows)
        if size >= span or end == len(order):
            chunk = sorted(order[start:end], key=lambda g: len(g.prefix) + max(map(len, g.rests)))
            batches.extend(batches_of_groups(chunk, rows_per_batch))
            start, size = end, 0
    permutation = np.random.default_rng([*seed, 1]).permutation(len(batches))
    return [batches[index] for index in permutation]


def lr_lambda(total_steps: int, warmup_steps: int) -> Any:
    """Linear warm-up then cosine decay to zero, as a LambdaLR multiplier."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class StageTrainer:
    """Trains the live LoRA adapter (and, for the residual objectives, its fusion head) for one stage.

    Leaves the stage's best weights in both. `head` is None for the plain P(Yes) objective and for stage 1:
    text-only prompts carry no codes to add to.
    """

    def __init__(
        self,
        config: TuneConfig,
        model: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        answer: AnswerTokens,
        stage: int,
        train: PromptSet,
        valid: PromptSet,
        ranks: Ranks = SINGLE,
        code_score: CodeScore | None = None,
    ) -> None:
        if len(train) == 0 or len(valid) == 0:
            raise ValueError("tuning needs at least one train and one valid row")
        self.config, self.model, self.tokenizer, self.answer = config, model, tokenizer, answer
        self.stage, self.train, self.valid = stage, train, valid
        self.ranks = ranks  # under torchrun: this rank scores its share of each micro-batch (distributed.py)
        self.device = next(model.parameters()).device
        self.pad_id = pad_token_id(tokenizer)
        self.labels = torch.tensor(train.labels, dtype=torch.float32)
        self.head = self._residual_head(code_score)
        soft = soft_embedding(model)
        # saved and restored with the adapter: the fusion head, and CoLLM's projector when it is trained
        self.sidecars: list[Sidecar] = [self.head] if self.head is not None else []
        if soft is not None:
            self.sidecars.append(soft.projector)
        grouped = grouped_prompts(tokenizer, train, share_prefixes=config.share_prefixes)
        valid_grouped = grouped_prompts(tokenizer, valid)
        self.groups, self.train_table = grouped.groups, grouped.table
        self.valid_groups, self.valid_table = valid_grouped.groups, valid_grouped.table
        # a projector in front of layer 0 changes every layer's input: nothing below the LoRA is frozen then
        self.trunk_layers = frozen_layers(model) if config.cache_trunk and soft is None else 0
        self._trunks: dict[str, TrunkStates] = {}
        total_steps = sum(
            math.ceil(len(self.epoch_batches(epoch)) / config.grad_accum) for epoch in range(config.epochs)
        )
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(total_steps, int(config.warmup_ratio * total_steps))
        )
        self.out_dir = Path(config.out_dir)
        self.best_dir = self.out_dir / f"stage{stage}" / "best"
        self.log = ThroughputLog(total_steps, config.log_every, label=f"stage {stage}")

    def _residual_head(self, code_score: CodeScore | None) -> FusionHead | None:
        """The trainable fusion of the residual objectives (stage 2 only), with each row's code logit."""
        if self.config.objective == "p_yes" or self.stage != 2:
            return None
        if code_score is None or self.train.row_codes is None or self.valid.row_codes is None:
            raise ValueError(f"objective {self.config.objective!r} needs codes with a code score")
        self.code_logits, self.warm = code_inputs(self.train, code_score)
        self.valid_code_logits, self.valid_warm = code_inputs(self.valid, code_score)
        return FusionHead(self.config.llm_weight_init).to(self.device)

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer trains: the LoRA weights, then the head's (a fixed order, for resume)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return params + (list(self.head.parameters()) if self.head is not None else [])

    def epoch_batches(self, epoch: int) -> list[list[PrefixGroup]]:
        """The micro-batches of one epoch: a pure function of (seed, stage, epoch), so resume replays them."""
        seed = (self.config.seed, self.stage, epoch)
        if self.config.bucket_by_length:
            return bucketed(self.groups, self.config.batch_size, seed)
        return list(batches_of_groups(shuffled_groups(self.groups, seed), self.config.batch_size))

    def run(self, state: TrainState, optimizer_from: Path | None) -> TrainState:
        """Train from `state` to the end of the stage (or early stop); returns the finished state."""
        if optimizer_from is not None:
            load_optimizer_state(optimizer_from, self.optimizer, self.scheduler)
            for sidecar in self.sidecars:
                sidecar.load(optimizer_from / ADAPTER_DIRNAME)
        torch.manual_seed(self.config.seed * 1_000_003 + self.stage * 7919 + state.global_steps)
        self.model.train()
        stopped = False
        while state.epoch < self.config.epochs and not stopped:
            stopped = self._epoch(state)
        if self.config.select == "best" and self.best_dir.is_dir():
            load_adapter_weights(self.model, self.best_dir)
            for sidecar in self.sidecars:
                sidecar.load(self.best_dir)
        state.stage_results[f"stage{self.stage}"] = {"best_auc": state.best_auc, "evals": state.evals}
        state.stage_done = True
        self._checkpoint(state)
        return state

    def _epoch(self, state: TrainState) -> bool:
        """The rest of epoch `state.epoch`; True when early stopping ended the stage."""
        config = self.config
        batches = self.epoch_batches(state.epoch)
        bar = tqdm(
            total=len(batches),
            initial=state.batches_done,
            desc=f"stage {self.stage} epoch {state.epoch + 1}/{config.epochs}",
            disable=not config.progress,
        )
        pending: list[float] = []
        prompts = 0
        with bar:
            for index in range(state.batches_done, len(batches)):
                pending.append(self._backward(batches[index]))
                prompts += sum(len(group.rows) for group in batches[index])
                state.batches_done = index + 1
                bar.update(1)
                if state.batches_done % config.grad_accum and state.batches_done < len(batches):
                    continue
                self._step(state, float(np.mean(pending)))
                self.log.step(state, prompts)
                pending, prompts = [], 0
                bar.set_postfix(loss=f"{state.losses[-1]:.4f}", best_auc=state.best_auc)
                if (
                    config.eval_every
                    and state.optimizer_steps % config.eval_every == 0
                    and self._validate(state)
                ):
                    return True
        state.epoch += 1
        state.batches_done = 0
        if config.eval_every and state.optimizer_steps % config.eval_every == 0:
            self._checkpoint(state)  # validated at this very step already
            return state.bad_evals >= config.patience
        return self._validate(state)

    def trunk(self, split: str) -> TrunkStates | None:
        """The frozen layers' output for "train" or "valid", computed on first use (None: nothing frozen)."""
        if self.trunk_layers == 0:
            return None
        if split not in self._trunks:
            groups = self.groups if split == "train" else self.valid_groups
            with autocast_for(self.device, self.config.precision):
                self._trunks[split] = cached_trunk(
                    self.model,
                    groups,
                    self.pad_id,
                    self.trunk_layers,
                    self.config.eval_batch_size,
                    store=self.config.trunk_cache_dir,
                    tag=trunk_tag(self.config, uses_bf16(self.device, self.config.precision)),
                )
        return self._trunks[split]

    def _backward(self, batch: list[PrefixGroup]) -> float:
        """Forward + backward of this rank's share of one micro-batch; returns its part of the mean loss.

        The BCE sum over the share's rows is divided by the rows of the whole micro-batch, so the ranks'
        parts (and gradients) add up to the mean one process computes.
        """
        mine = self.ranks.shard(batch)
        if not mine:
            return 0.0
        trunk = self.trunk("train")
        with autocast_for(self.device, self.config.precision), embedding_table(self.model, self.train_table):
            margins, rows = ordered_margins(self.model, mine, self.answer, self.pad_id, trunk)  # [share]
        labels = self.labels[rows].to(self.device)  # [share]
        n_rows = sum(len(group.rows) for group in batch)
        if self.head is None:
            loss_sum = torch.nn.functional.binary_cross_entropy_with_logits(margins, labels, reduction="sum")
        else:
            code_logits, warm = self.code_logits[rows].to(self.device), self.warm[rows].to(self.device)
            loss_sum = residual_loss(
                self.head, margins, code_logits, warm, labels, flip=self.config.objective == "flip"
            )
        loss = loss_sum / n_rows
        (loss / self.config.grad_accum).backward()
        return float(loss.detach())

    def _step(self, state: TrainState, loss: float) -> None:
        params = self.parameters()
        if self.ranks.world > 1:
            loss = all_reduce_gradients(
                params, loss
            )  # the whole micro-batches' gradient and loss, on every rank
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.optimizer_steps += 1
        state.global_steps += 1
        state.losses.append(loss)

    def _score_valid(self) -> np.ndarray:
        """Logits of every valid row with the live adapter: margins, or the head's fused logits."""
        with embedding_table(self.model, self.valid_table):
            margins = score_groups(
                self.model,
                self.valid_groups,
                len(self.valid),
                self.answer,
                self.pad_id,
                self.config.eval_batch_size,
                self.config.progress,
                self.trunk("valid"),
                self.config.precision,
            )
        if self.head is None:
            return margins
        with torch.no_grad():
            fused = self.head(torch.from_numpy(margins), self.valid_code_logits, self.valid_warm)
        return fused.numpy()

    def _validate(self, state: TrainState) -> bool:
        """Score valid, keep the best adapter, checkpoint; True when patience is exhausted."""
        metrics = validation_metrics(self._score_valid(), self.valid)
        if self.head is not None:
            codes_only = validation_metrics(self.valid_code_logits.numpy(), self.valid)
            metrics["codes_auc"], metrics["codes_uauc"] = codes_only["auc"], codes_only["uauc"]
            metrics["fusion"] = self.head.weights.detach().cpu().tolist()
        record = {"stage": self.stage, "epoch": state.epoch, "step": state.optimizer_steps, **metrics}
        state.evals.append(record)
        auc = metrics["auc"]
        if not math.isnan(auc) and (state.best_auc is None or auc > state.best_auc):
            state.best_auc = float(auc)
            state.bad_evals = 0
            self.model.save_pretrained(str(self.best_dir))
            for sidecar in self.sidecars:
                sidecar.save(self.best_dir)
        else:
            state.bad_evals += 1
        against = (
            f" (codes alone {metrics['codes_auc']:.4f} / {metrics['codes_uauc']:.4f})" if self.head else ""
        )
        tqdm.write(
            f"stage {self.stage} step {state.optimizer_steps}: valid auc={auc:.4f} "
            f"uauc={metrics['uauc']:.4f}{against} on {metrics['n']} rows"
        )
        self._checkpoint(state)
        return state.bad_evals >= self.config.patience

    def _checkpoint(self, state: TrainState) -> None:
        save_checkpoint(
            self.out_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            state,
            keep=self.config.keep_checkpoints,
            sidecars=self.sidecars,
        )


def trunk_tag(config: TuneConfig, bf16: bool) -> str:
    """What the cached trunk depends on beyond its tokens: the base model, the starting adapter, the dtype."""
    start = ""
    if config.init_adapter is not None:
        weights = Path(config.init_adapter) / "adapter_model.safetensors"
        start = (
            hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
            if weights.is_file()
            else config.init_adapter
        )
    # "eval": computed without dropout; trunks kept before that (one draw of a frozen LoRA's dropout) are stale
    return f"{config.base_model}|{start}|{'bf16' if bf16 else 'fp32'}|eval"


def code_inputs(data: PromptSet, code_score: CodeScore) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's code logit [N] (fp32) and warm flag [N] (both own codes in the prompt), for the head."""
    pairs = data.row_codes or []
    logits = torch.tensor([code_score.logit(user, item) for user, item in pairs], dtype=torch.float32)
    warm = torch.tensor([user is not None and item is not None for user, item in pairs], dtype=torch.bool)
    return logits, warm
