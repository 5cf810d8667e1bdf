"""Run the real service (`uvicorn app.main:app`) in a subprocess on a free loopback port, for integration tests.

with running_service(redis_url, BINLLM_BACKEND="vllm", BINLLM_VLLM__BASE_URL=url) as service_url: ...
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.integration.conftest import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def running_service(
    redis_url: str, *, workers: int = 1, start_timeout_s: float = 30.0, **env: str
) -> Iterator[str]:
    """uvicorn with store=redis (backend=instant unless `env` says otherwise); yields its URL once /healthz answers."""
    port = free_port()
    full_env = {
        **os.environ,
        "BINLLM_BACKEND": "instant",
        "BINLLM_STORE": "redis",
        "BINLLM_REDIS_URL": redis_url,
        **env,
    }
    args = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", str(workers), "--log-level", "warning"]
    # Idle keep-alive connections live 30 s, not uvicorn's 5: on a loaded CI box a pooled connection can sit
    # idle past 5 s while its round's slowest request finishes, and a reuse racing the server's close is a
    # client-side ReadError, not an answer of the service (the tests hammer with pooled connections).
    args += ["--timeout-keep-alive", "30"]
    proc = subprocess.Popen(args, cwd=REPO, env=full_env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            assert proc.poll() is None, f"uvicorn exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"uvicorn did not start in {start_timeout_s:.0f} s"
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, timeout_s=10)


def wait_ready(url: str, timeout_s: float = 30.0) -> float:
    """Poll /readyz until it says 200 (a local model loads and warms up in the background); the seconds it took."""
    start = time.monotonic()
    while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() - start < timeout_s, f"/readyz not 200 after {timeout_s} s"
        time.sleep(0.2)
    return time.monotonic() - start
