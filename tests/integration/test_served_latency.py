"""bench/served_latency.py in its short mode, as CI runs it: the service started as `make serve` does, a few
requests per setting, every line printed; no figure is asserted (timings belong to the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_short_run_prints_every_setting_and_the_summary_line(tmp_path: Path) -> None:
    if not (ROOT / "artifacts/demo/snapshot/ACTIVE").is_file():
        pytest.skip("no demo artifacts: run `make demo`")
    args = ["--short", "--clients", "1,2", "--requests", "1", "--log", str(tmp_path / "log")]
    result = subprocess.run(
        [sys.executable, "bench/served_latency.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    header = json.loads(lines[0])
    assert header["backend"] == "local" and set(header["flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
    settings = [json.loads(line) for line in lines[1:-2]]
    assert [(s["clients"], s["candidates"]) for s in settings] == [(1, 1), (1, 10), (2, 1), (2, 10)]
    for setting in settings:
        assert {"p50_s", "p99_s", "llm_share", "degraded", "candidates_per_s"} <= set(setting)
        assert 0.0 <= setting["llm_share"] <= 1.0
    assert lines[-1].startswith("candidates_per_s: ")
