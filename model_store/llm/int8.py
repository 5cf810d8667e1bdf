"""The int8 engine for CPUs without native bf16: the decoder's linear layers multiply in int8.

On a CPU that only has AVX2 (or AVX-512 without BF16), bf16 is emulated and slower than fp32, so the fast
path there is integer arithmetic. `Int8Linear` stores each decoder `nn.Linear` weight as int8 with one scale
per output channel, and quantizes its input on the fly with one scale per token (row): symmetric, round to
nearest, no calibration data, no export and no extra dependency. The product runs in `torch._int_mm` (int8 x
int8 -> int32, oneDNN: VNNI where the CPU has it, AVX2 otherwise; the op torchao's int8 kernels call), and
the int32 result is scaled back to fp32 by the row's and the channel's scale.

Why one scale per token: torch's dynamic quantization (`quantize_dynamic`, measured here before) sets one
activation scale per batch, so the few large activations small LLMs have in some rows coarsen every other
row of the batch, and a row's score moved with the rows it was batched with; it moved P(Yes) ~3x further
from fp32 than per-token scales do (README: the int8 engine). With a scale per token, a row's result does
not depend on the rest of the batch at all.

The model stays an ordinary `transformers` module, so prefix sharing, the KV cache and CoLLM's soft tokens
work unchanged; everything but the decoder's linear layers stays fp32: the token embeddings, the norms,
attention itself, the LM head (only the last position's Yes/No logits are read) and a CoLLM projector. What
int8 costs in AUC/UAUC and buys in speed: `bench/bf16_quality.py --candidate int8` and
`bench/scoring_throughput.py --dtypes float32,int8` (`--isa avx2` for an AVX2-only CPU).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

INT8_MAX = 127  # symmetric int8: [-127, 127], so the scale maps the largest |value| to 127


def decoder_linears(model: nn.Module) -> set[str]:
    """Names of the `nn.Linear` modules inside the decoder layers (attention and MLP projections)."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and ".layers." in f".{name}"
    }


def quantize_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of `values` [M, K] as int8 with its own scale: (int8 [M, K], fp32 scales [M, 1]).

    An all-zero row gets a tiny scale (its int8 values are zeros either way).
    """
    scale = values.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(INT8_MAX)  # [M, 1]
    return torch.round(values / scale).to(torch.int8), scale


class Int8Linear(nn.Module):
    """`y = x W^T + b` with W in int8 (a scale per output channel) and x quantized per token at every call."""

    weight_t: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight_t: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight_t.shape
        self.register_buffer("weight_t", weight_t)  # [K, N] int8, laid out for `torch._int_mm`
        self.register_buffer("weight_scale", weight_scale)  # [N] fp32
        self.register_buffer("bias", bias)  # [N] fp32 or None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 copy of an fp32 `linear`."""
        weight_q, scale = quantize_rows(linear.weight.detach().float())  # [N, K], [N, 1]
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        return cls(weight_q.t().contiguous(), scale.squeeze(1), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] fp32 -> [..., N] fp32."""
        rows = x.reshape(-1, self.in_features).float()  # [M, K]
        x_q, x_scale = quantize_rows(rows)  # [M, K] int8, [M, 1]
        out = torch._int_mm(x_q, self.weight_t).float().mul_(x_scale).mul_(self.weight_scale)  # [M, N]
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per token x channel"


def quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Swap the decoder's linear layers for `Int8Linear`, in place; the model must be fp32 on the CPU."""
    weights = next(model.parameters())
    if weights.device.type != "cpu" or weights.dtype != torch.float32:
        raise ValueError(f"int8 needs an fp32 model on the CPU, not {weights.dtype} on {weights.device}")
    names = decoder_linears(model)
    if not names:
        raise ValueError("the model has no linear layers inside decoder layers to quantize")
    for name in sorted(names):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, Int8Linear.from_linear(getattr(parent, child)))
    return model


def is_int8(model: nn.Module) -> bool:
    """Whether `quantize_int8` ran on the model (some linear layer holds int8 weights)."""
    return any(isinstance(module, Int8Linear) for module in model.modules())
