"""Stage-2 tuning throughput on real ML-1M prompts: today's recipe against the fast one, in one process.

Baseline ("paper"): the papers' wording with 32-bit binary codes, whole-prompt batches, LoRA r8 on q/v of
every layer (the first recipe we tried), rows drawn one by one. Fast ("serving"): the serving layout with
hex codes, rows drawn by (user, history) group as `binllm llm tune` does, each user prefix run once per
batch (`model_store/llm/grouped.py`), LoRA r16 on all projections of the top 10 layers only, so the frozen
layers below need no backward pass and run once per prompt set (`model_store/llm/trunk.py`).

Each recipe runs a short stage as `binllm llm tune` would: `--epochs` passes over `--rows` seeded train rows,
one validation over `--valid-rows` valid_small rows after each, a warm-up pass first. The figure is train
prompts per second of the whole stage (trunk passes, forward + backward + AdamW, validations), machine as it
is; the training steps' own rate is printed beside it.

    python bench/tune_throughput.py [--rows 48] [--valid-rows 32] [--epochs 3] [--threads 2]

Prints one line per recipe, then the ratio, then, last, `prompts_per_s: X` for the fast recipe's stage.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from model_store.codes.codebook import load_codes
from model_store.contract.prompts import PromptStyle
from model_store.data.io import read_split
from model_store.llm.answer import find_answer_tokens
from model_store.llm.dataset import build_prompts
from model_store.llm.grouped import ordered_margins
from model_store.llm.models import ensure_smollm2, load_causal_lm
from model_store.llm.trainer import StageTrainer
from model_store.llm.tune import attach_lora
from model_store.llm.tune_config import TuneConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m-collm"


def recipe(name: str, base: str, out: Path, batch_size: int) -> TuneConfig:
    """The two recipes compared; everything not named here is the same."""
    common = {
        "base_model": base,
        "train": str(DATA / "train_ood2.jsonl.gz"),
        "valid": str(DATA / "valid_small_ood2.jsonl.gz"),
        "out_dir": str(out / name),
        "codes": str(out / "codes"),
        "batch_size": batch_size,
        "lora_dropout": 0.0,
        "progress": False,
    }
    if name == "paper":
        return TuneConfig.model_validate(
            {
                **common,
                "prompt_style": PromptStyle(layout="paper", code_mode="binary"),
                "share_prefixes": False,
                "lora_r": 8,
                "lora_alpha": 16,
                "target_modules": ("q_proj", "v_proj"),
            }
        )
    return TuneConfig.model_validate(
        {
            **common,
            "prompt_style": PromptStyle(layout="serving", code_mode="hex"),
            "share_prefixes": True,
            "lora_r": 16,
            "lora_alpha": 32,
            "target_modules": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            "lora_top_layers": 10,
        }
    )


def measure(config: TuneConfig, rows: int, valid_rows: int, epochs: int) -> tuple[float, float, float]:
    """Prompts per wall second of a whole stage, per CPU second of it, and per wall second of its training
    steps alone, after one warm-up pass. CPU seconds (all threads) count the work even when neighbours
    share the machine; wall seconds are what a user waits.

    The stage is `epochs` passes over `rows` train prompts with one validation over `valid_rows` prompts
    after each, timed end to end: frozen-trunk passes, optimizer steps and validations all count.
    """
    codes = load_codes(config.codes or "")
    base, tokenizer = load_causal_lm(config.base_model, device="cpu")
    model = attach_lora(base, config)
    answer = find_answer_tokens(tokenizer)
    splits = [
        build_prompts(  # drawn as `binllm llm tune` draws them
            read_split(path),
            codes=codes,
            style=config.prompt_style,
            max_samples=n,
            seed=0,
            sample_groups=config.share_prefixes,
        )
        for path, n in ((config.train, rows), (config.valid, valid_rows))
    ]
    train, valid = splits
    trainer = StageTrainer(config, model, tokenizer, answer, 2, train, valid)
    warm_up = trainer.epoch_batches(0)[0][:1]
    ordered_margins(model, warm_up, answer, trainer.pad_id)[0].sum().backward()  # allocator, kernels
    trainer.optimizer.zero_grad(set_to_none=True)
    step_time = 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        for batch in trainer.epoch_batches(epoch):
            trainer.trunk("train")  # computed once, on first use (not a training step)
            step_start = time.perf_counter()
            trainer._backward(batch)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            step_time += time.perf_counter() - step_start
        trainer._score_valid()
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    done = epochs * len(train)
    return done / total, done / cpu, done / step_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48, help="seeded train rows (whole user groups)")
    parser.add_argument("--valid-rows", type=int, default=32, help="seeded valid_small rows per validation")
    parser.add_argument(
        "--epochs", type=int, default=3, help="passes over the train rows (tuning runs several per stage)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/tune_throughput"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.out / "codes" / "config.json").is_file():
        binllm = Path(sys.executable).with_name("binllm")
        train, valid = DATA / "train_ood2.jsonl.gz", DATA / "valid_small_ood2.jsonl.gz"
        command = [str(binllm), "codes", "train", "--train", str(train), "--valid", str(valid)]
        subprocess.run([*command, "--out", str(args.out / "codes")], check=True, stdout=subprocess.DEVNULL)
    base = str(ensure_smollm2())
    results, per_cpu = {}, {}
    for name in ("paper", "serving"):
        config = recipe(name, base, args.out, args.batch_size)
        results[name], per_cpu[name], steps_only = measure(config, args.rows, args.valid_rows, args.epochs)
        print(
            f"{name}: {results[name]:.2f} prompts/s for the stage ({args.epochs} epochs x {args.rows} rows, "
            f"{args.epochs} validations x {args.valid_rows} rows), {per_cpu[name]:.2f} per CPU second; "
            f"training steps alone {steps_only:.2f} prompts/s"
        )
    ratio = results["serving"] / results["paper"]
    print(f"speedup (CPU seconds): {per_cpu['serving'] / per_cpu['paper']:.2f}")
    print(f"speedup: {ratio:.2f}" if math.isfinite(ratio) else "speedup: n/a")
    print(f"prompts_per_s: {results['serving']:.2f}")


if __name__ == "__main__":
    main()
