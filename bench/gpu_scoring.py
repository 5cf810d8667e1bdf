"""Scoring throughput on one CUDA GPU: 100 candidates x many users, each user's prefix computed once.

Needs only torch and transformers (no network, no vLLM, no weights): the models are random-initialised in
bf16 with the real shapes, since speed depends on shapes, not on values. `vicuna-7b` is Llama-2-7B's shape
(Vicuna-7B v1.5: hidden 4096, 32 layers, 32 heads, MLP 11008); `smollm2` is SmolLM2-135M's (hidden 576, 30
layers, 9 heads / 3 KV heads, MLP 1536); random weights of each shape, so no model file is
needed on the GPU host.

Each user's prompts are laid out as ONE sequence, [prefix | candidate 1 | ... | candidate K], with a 4-D
attention mask in which every candidate sees the prefix and its own earlier tokens only, and position ids
that restart after the prefix for every candidate: the same computation as K separate prompts sharing a
prefix cache (causal attention never looks ahead), with no key/value copies and large matrix products.
Token counts follow the serving prompt on ML-1M: a 177-token prefix and 15 tokens per candidate.

    python bench/gpu_scoring.py                      # both shapes, on the GPU
    python bench/gpu_scoring.py --shape smollm2 --device cpu --users 2 --candidates 8 --repeats 1  # smoke

Prints per shape: candidates/s, achieved TFLOP/s and their share of the card's bf16 peak (--peak-tflops;
an H200 measures about 790 on large bf16 matrix products), peak memory; last, `candidates_per_s: X` for
the first shape.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from transformers import LlamaConfig, LlamaModel

SHAPES: dict[str, dict[str, Any]] = {
    "vicuna-7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
    "smollm2": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152},
}  # fmt: skip


def tree_layout(prefix_len: int, suffix_len: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask [T, T] (True = may attend), position ids [T] and each candidate's last position [k], T = P + k*S."""
    total = prefix_len + k * suffix_len
    owner = torch.full((total,), -1, dtype=torch.long)  # -1 = prefix, j = candidate j
    owner[prefix_len:] = torch.arange(k).repeat_interleave(suffix_len)
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    same_or_prefix = (owner[None, :] == -1) | (owner[None, :] == owner[:, None])
    positions = torch.cat([torch.arange(prefix_len), prefix_len + torch.arange(suffix_len).repeat(k)])
    last = prefix_len + torch.arange(1, k + 1) * suffix_len - 1
    return causal & same_or_prefix, positions, last


def run_shape(name: str, args: argparse.Namespace) -> float:
    """Candidates/s for one model shape; prints its line."""
    device = torch.device(args.device)
    config = LlamaConfig(**SHAPES[name], max_position_embeddings=4096)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # weights made in bf16 where they are made: no fp32 copy of a 7B
    with torch.device(device):
        model = LlamaModel(config).eval()
    torch.set_default_dtype(torch.float32)
    direction = torch.randn(config.hidden_size, device=device)  # w_yes - w_no
    mask, positions, last = tree_layout(args.prefix_tokens, args.suffix_tokens, args.candidates)
    users_per_pass = args.users_per_pass
    ids = torch.randint(0, config.vocab_size, (users_per_pass, mask.shape[0]), device=device)
    mask_4d = mask[None, None].expand(users_per_pass, 1, -1, -1).to(device)  # [B, 1, T, T]
    position_ids = positions[None].expand(users_per_pass, -1).to(device)  # [B, T]
    last = last.to(device)

    @torch.inference_mode()
    def one_pass() -> torch.Tensor:
        hidden = model(input_ids=ids, attention_mask=mask_4d, position_ids=position_ids, use_cache=False)
        picked = hidden.last_hidden_state[:, last]  # [B, K, E]
        return torch.sigmoid(picked.float() @ direction)  # [B, K] P(Yes)

    passes = max(1, args.users // users_per_pass)
    one_pass()  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.repeats):
        for _ in range(passes):
            scores = one_pass()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    candidates = args.repeats * passes * users_per_pass * args.candidates
    params = sum(p.numel() for p in model.parameters()) - config.vocab_size * config.hidden_size
    tokens = args.repeats * passes * ids.numel()
    seq = mask.shape[0]
    attention = 4 * seq * seq * config.hidden_size * config.num_hidden_layers  # QK^T and AV, masked or not
    flops = 2 * params * tokens + attention * args.repeats * passes * users_per_pass
    tflops = flops / elapsed / 1e12
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(
        f"{name}: {candidates / elapsed:.1f} candidates/s ({args.users} users x {args.candidates}, "
        f"{users_per_pass} users per pass, {seq} tokens each), {tflops:.1f} TFLOP/s = "
        f"{100 * tflops / args.peak_tflops:.1f}% of {args.peak_tflops:.0f}, peak memory {memory:.1f} GiB; "
        f"scores finite: {bool(torch.isfinite(scores).all())}"
    )
    return candidates / elapsed


def main() -> None:
    """Parse arguments, run each shape, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--users", type=int, default=64, help="users per repeat")
    parser.add_argument("--users-per-pass", type=int, default=8, help="users (sequences) per forward pass")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--prefix-tokens", type=int, default=177)
    parser.add_argument("--suffix-tokens", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the card's measured bf16 peak")
    args = parser.parse_args()
    args.users_per_pass = min(args.users_per_pass, args.users)
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    results = [run_shape(name, args) for name in shapes]
    print(f"candidates_per_s: {results[0]:.1f}")


if __name__ == "__main__":
    main()
