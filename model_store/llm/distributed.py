"""Data-parallel tuning under `torchrun`: N processes, one share of every micro-batch each, gradients summed.

    torchrun --standalone --nproc_per_node 2 --no-python binllm llm tune --train ... --valid ... --out ...

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; `setup()` then joins the process group (NCCL on CUDA, gloo on
CPU) and each rank uses `cuda:LOCAL_RANK` or the CPU. Every rank walks the same seeded micro-batches
(`StageTrainer.epoch_batches`); rank r scores the prefix groups `batch[r::N]` and scales its BCE sum by the
rows of the whole micro-batch, so after the gradients are summed across ranks (one all-reduce per optimizer
step, `all_reduce_gradients`) each rank holds exactly the gradient one process computes for that micro-batch,
and the identical optimizer steps keep every rank's adapter identical: the same run as one process at the
same global batch, to float tolerance (with `lora_dropout=0`; dropout masks come from each rank's own RNG).
This is what DistributedDataParallel does for a module; done by hand because the trainer's forward is not one
module call (a shared-prefix pass, then the suffixes against its cache, optionally over a cached frozen trunk).
Validation runs on every rank (same weights, same answer), so early stopping agrees without messages. Rank 0
writes the run's outputs; rank r > 0 writes its checkpoints under `OUT/.rank{r}/`, so `--resume` restores
every rank from its own files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

_T = TypeVar("_T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank, world size, local rank (1 process: 0, 1, 0)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run's outputs."""
        return self.rank == 0

    def shard(self, items: list[_T]) -> list[_T]:
        """This rank's share of `items`: every world-th one, starting at its rank."""
        return items[self.rank :: self.world]


SINGLE = Ranks()


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> Ranks:
    """Join the process group torchrun described (once); SINGLE when not launched by torchrun."""
    if not launched_by_torchrun():
        return SINGLE
    ranks = Ranks(
        rank=int(os.environ["RANK"]),
        world=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return ranks


def rank_device(device: str, ranks: Ranks) -> str:
    """Each rank its own GPU (`cuda:LOCAL_RANK`); CPU ranks share the CPU."""
    if ranks.world > 1 and device == "cuda":
        torch.cuda.set_device(ranks.local_rank)
        return f"cuda:{ranks.local_rank}"
    return device


def all_reduce_gradients(params: list[torch.nn.Parameter], loss: float) -> float:
    """Sum every trainable gradient (and the micro-batch losses) over the ranks; returns the summed loss.

    One flat all-reduce: LoRA gradients are small, and one message beats one per tensor.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([loss], device=grads[0].device)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        n = grad.numel()
        param.grad = flat[offset : offset + n].view_as(grad).clone()
        offset += n
    return float(flat[-1])


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (no-op in one process)."""
    if ranks.world > 1:
        dist.barrier()


def teardown(ranks: Ranks) -> None:
    """Leave the process group at the end of a run."""
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
