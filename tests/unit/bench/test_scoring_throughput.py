"""bench/scoring_throughput.py sets each dtype's GFLOP/s against the peak of the vector units the CPU has."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[3] / "bench" / "scoring_throughput.py"


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scoring_throughput", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_peak_follows_the_vector_width_and_the_bf16_units() -> None:
    per_cycle = bench_module().flop_per_cycle
    avx2 = frozenset({"avx2", "fma"})
    avx512 = avx2 | {"avx512f"}
    assert per_cycle(avx2, "GenuineIntel", 6) == {"float32": 32, "bfloat16": 32}  # bf16 emulated
    assert per_cycle(avx512, "GenuineIntel", 6) == {"float32": 64, "bfloat16": 64}  # two 512-bit FMA pipes
    assert per_cycle(avx512 | {"amx_bf16"}, "GenuineIntel", 6)["bfloat16"] == 1024  # AMX tiles
    zen4 = per_cycle(avx512 | {"avx512_bf16"}, "AuthenticAMD", 25)  # 512-bit ops split in two 256-bit halves
    assert zen4 == {"float32": 32, "bfloat16": 64}
    assert per_cycle(avx512, "AuthenticAMD", 26)["float32"] == 64  # Zen 5: full 512-bit pipes
