"""model_store.llm.isa: a command reruns itself with every kernel library capped at AVX2, and knows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_store.llm.isa import AVX2_ONLY, isa_capped


def test_a_script_reruns_itself_capped_and_reports_the_cap(tmp_path: Path) -> None:
    script = tmp_path / "capped.py"
    script.write_text(
        "import os, sys\n"
        "from model_store.llm.isa import isa_capped, reexec_capped\n"
        "print('run', isa_capped(), sys.argv[1:], flush=True)\n"
        "reexec_capped('avx2')\n"
        "print('caps', os.environ['FBGEMM_ENABLE_INSTRUCTIONS'], os.environ['ATEN_CPU_CAPABILITY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[4])
    out = subprocess.run(
        [sys.executable, str(script), "--flag"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["run None ['--flag']", "run avx2 ['--flag']", "caps AVX2 avx2"]


def test_a_partial_cap_is_no_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in AVX2_ONLY.items():
        monkeypatch.setenv(key, value)
    assert isa_capped() == "avx2"
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS")
    assert isa_capped() is None
