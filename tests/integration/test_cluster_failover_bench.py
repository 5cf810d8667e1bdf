"""`bench/cluster_failover.py` as the README shows it: a real 6-node cluster, a primary killed under load, the
baseline without retries and the default; the figures are the machine's, the absence of 503s is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import ServiceSettings
from tests.integration.conftest import REDIS_SERVER
from tests.integration.redis_cluster import REDIS_CLI

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server/redis-cli missing"),
]


def test_the_readme_failover_run_prints_both_settings_and_the_default_loses_nothing() -> None:
    command = "python bench/cluster_failover.py --node-timeout-ms 2000"  # as in README.md
    assert command in (ROOT / "README.md").read_text(encoding="utf-8")
    result = subprocess.run(
        [sys.executable, *command.split()[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    header, baseline, default = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert header == {"node_timeout_ms": 2000, "clients": 2}
    assert baseline["redis_failover_s"] == 0.0
    assert default["redis_failover_s"] == ServiceSettings.model_fields["redis_failover_s"].default
    assert baseline["statuses"].get("503", 0) > 0  # without retries the failover shows
    assert set(default["statuses"]) == {"200"} and default["window_requests"] >= 1
