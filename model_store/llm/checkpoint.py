"""Resumable tuning checkpoints: the LoRA adapter, the optimizer and scheduler, and where the loop stood.

A checkpoint is a directory `out_dir/checkpoints/step-000123/` holding `adapter/` (peft `save_pretrained`),
`optimizer.pt` (optimizer + LR scheduler state) and `state.json` (`TrainState`). It is written to a hidden
temporary sibling and renamed into place, so a run killed mid-save leaves the previous checkpoint as the
latest; `tune --resume` reloads the newest one and replays the exact remaining batches (the epoch order is
a pure function of the seed, stage and epoch).

    ls artifacts/llm/checkpoints/ && binllm llm tune ... --resume
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import PeftModel, set_peft_model_state_dict
from pydantic import BaseModel, Field
from safetensors.torch import load_file


class Sidecar(Protocol):
    """A module trained beside the LoRA and saved with it (the fusion head, the CoLLM projector)."""

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> bool: ...


CHECKPOINTS_DIRNAME = "checkpoints"
STATE_FILENAME = "state.json"
OPTIMIZER_FILENAME = "optimizer.pt"
ADAPTER_DIRNAME = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class TrainState(BaseModel):
    """Where the two-stage loop stands; enough to continue it exactly."""

    stage_index: int = Field(default=0, description="Index into TuneConfig.stages of the running stage.")
    epoch: int = 0
    batches_done: int = Field(default=0, description="Micro-batches of `epoch` already consumed.")
    optimizer_steps: int = Field(default=0, description="Optimizer steps taken in the running stage.")
    global_steps: int = Field(default=0, description="Optimizer steps over all stages (checkpoint names).")
    best_auc: float | None = Field(default=None, description="Best valid AUC of the running stage.")
    bad_evals: int = Field(default=0, description="Evaluations since the best one (early stopping).")
    stage_done: bool = Field(default=False, description="The running stage finished (or stopped early).")
    losses: list[float] = Field(default_factory=list, description="Mean training loss per optimizer step.")
    evals: list[dict[str, Any]] = Field(default_factory=list, description="Validations of the running stage.")
    stage_results: dict[str, Any] = Field(
        default_factory=dict, description="Per finished stage: best, evals."
    )

    def next_stage(self) -> TrainState:
        """The state at the start of the following stage: counters reset, history kept."""
        return self.model_copy(
            update={
                "stage_index": self.stage_index + 1,
                "epoch": 0,
                "batches_done": 0,
                "optimizer_steps": 0,
                "best_auc": None,
                "bad_evals": 0,
                "stage_done": False,
                "evals": [],
            },
            deep=True,
        )


def checkpoints_dir(out_dir: Path) -> Path:
    """Where a tuning run keeps its checkpoints."""
    return out_dir / CHECKPOINTS_DIRNAME


def save_checkpoint(
    out_dir: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
    *,
    keep: int,
    sidecars: Sequence[Sidecar] = (),
) -> Path:
    """Write a checkpoint atomically and delete all but the newest `keep` (`sidecars`: beside the adapter)."""
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.global_steps:08d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp / ADAPTER_DIRNAME))
    for sidecar in sidecars:
        sidecar.save(tmp / ADAPTER_DIRNAME)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER_FILENAME
    )
    (tmp / STATE_FILENAME).write_text(state.model_dump_json(indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    return sorted(path for path in root.glob("step-*") if (path / STATE_FILENAME).is_file())


def load_adapter_weights(model: PeftModel, adapter_dir: Path) -> None:
    """Copy saved LoRA weights into the live peft model (same config), in place."""
    weights = load_file(str(adapter_dir / ADAPTER_WEIGHTS), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"adapter {adapter_dir} does not fit the model: unexpected keys {unexpected[:3]}")


def load_optimizer_state(
    checkpoint: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Restore the optimizer moments and the LR schedule position of an unfinished stage."""
    saved = torch.load(checkpoint / OPTIMIZER_FILENAME, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])


def read_state(checkpoint: Path) -> TrainState:
    """The loop state of a checkpoint, without touching any model."""
    return TrainState.model_validate(json.loads((checkpoint / STATE_FILENAME).read_text(encoding="utf-8")))
