"""The int8 engine's linear layer: int8 weights per output channel, int8 activations per token, int32 sums."""

from __future__ import annotations

import pytest
import torch

from model_store.llm.int8 import Int8Linear, quantize_rows


def test_rows_are_quantized_each_with_its_own_scale() -> None:
    values = torch.tensor([[1.0, -2.0, 0.5], [100.0, 3.0, -50.0], [0.0, 0.0, 0.0]])
    q, scale = quantize_rows(values)
    assert q.dtype == torch.int8 and scale.shape == (3, 1)
    assert q[:, :].abs().amax(dim=1).tolist() == [127, 127, 0]  # each row's largest value maps to 127
    assert (q.float() * scale).sub(values).abs().max() <= scale.max() / 2 + 1e-6  # round to nearest


def test_the_int8_linear_is_close_to_fp32_and_each_row_is_independent_of_the_batch() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 7, 64)
    x[0, 0] *= 50.0  # one outlier token: with one scale per batch it would coarsen every other row
    int8 = Int8Linear.from_linear(linear)
    exact = linear(x).detach()
    out = int8(x)
    assert out.shape == exact.shape and out.dtype == torch.float32
    assert out != pytest.approx(exact, abs=1e-6)  # really computed in int8
    relative = (out - exact).norm(dim=-1) / exact.norm(dim=-1)
    assert float(relative.max()) < 0.02
    alone = int8(x[1:2])  # the same rows without the outlier's batch: bit for bit the same
    assert torch.equal(alone, out[1:2])


def test_the_int8_linear_keeps_no_bias_when_the_layer_has_none() -> None:
    linear = torch.nn.Linear(16, 8, bias=False)
    int8 = Int8Linear.from_linear(linear)
    assert int8.bias is None and int8.weight_t.dtype == torch.int8 and int8.weight_t.shape == (16, 8)
    assert int8(torch.zeros(2, 16)).abs().max() == 0
