"""Run this CPU as an AVX2-only one: every kernel library torch calls capped at AVX2, for measuring.

Machines differ (some have AMX or AVX512-BF16, some only AVX2), and the engine that serves fastest depends on
which. On an AVX-512 machine the AVX2 figures can still be measured: each library torch dispatches to has a
documented switch that caps the instructions it uses, read once when the library starts. The figures are
those of the same cores with narrower vectors, not of another CPU model (clocks, caches and memory stay).
"""

from __future__ import annotations

import os
import sys

AVX2_ONLY = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's fp32 GEMM
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (fp32/bf16 matmul, the onednn int8 backend)
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",  # fbgemm's int8 GEMM (dynamic quantization): no VNNI
}
CAPS = {"avx2": AVX2_ONLY}


def isa_capped() -> str | None:
    """The cap this process runs under ("avx2"), or None when every library uses all the CPU has."""
    for name, env in CAPS.items():
        if all(os.environ.get(key) == value for key, value in env.items()):
            return name
    return None


def reexec_capped(isa: str) -> None:
    """Restart this very command with the libraries capped at `isa` (the caps must precede their start)."""
    if isa_capped() == isa:
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **CAPS[isa]})
