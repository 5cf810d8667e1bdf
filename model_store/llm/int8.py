"""The int8 engine for CPUs without native bf16: the decoder's linear layers with int8 weights.

On a CPU that only has AVX2 (or AVX-512 without BF16), bf16 is emulated and slower than fp32, so the fast
path there is integer arithmetic. torch's dynamic quantization (`torch.ao.quantization.quantize_dynamic`,
fbgemm/oneDNN kernels, VNNI where the CPU has it) stores each `nn.Linear` weight of the decoder layers as int8
(per output channel) and quantizes the activations per batch on the fly; it needs no calibration data, no
export and no extra dependency, and it keeps the model an ordinary `transformers` module, so prefix sharing,
the KV cache and CoLLM's soft tokens work unchanged. torch marks these quantized tensors as deprecated (in
favour of torchao, not measured here); the warnings are silenced here and the choice is revisited when torch
drops them. Activations are quantized per batch, so a score moves slightly with the
other rows it is batched with. Everything else stays fp32: the token embeddings, the
norms, the LM head (only the last position's Yes/No logits are read) and a CoLLM projector. What int8 costs
in AUC/UAUC and buys in speed is measured by `bench/bf16_quality.py --candidate int8` and
`bench/scoring_throughput.py --dtypes float32,int8`.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import PreTrainedModel


def decoder_linears(model: nn.Module) -> set[str]:
    """Names of the `nn.Linear` modules inside the decoder layers (attention and MLP projections)."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and ".layers." in f".{name}"
    }


def quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Swap the decoder's linear layers for dynamic int8 ones, in place; the model must be fp32 on the CPU."""
    weights = next(model.parameters())
    if weights.device.type != "cpu" or weights.dtype != torch.float32:
        raise ValueError(f"int8 needs an fp32 model on the CPU, not {weights.dtype} on {weights.device}")
    names = decoder_linears(model)
    if not names:
        raise ValueError("the model has no linear layers inside decoder layers to quantize")
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message=r".*quantized tensor creation functions", category=UserWarning
        )
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model, set(names), dtype=torch.qint8, inplace=True)
    return model


def is_int8(model: nn.Module) -> bool:
    """Whether `quantize_int8` ran on the model (some linear layer holds int8 weights)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    return any(isinstance(module, DynamicInt8Linear) for module in model.modules())
