"""What the service itself costs per request, without an LLM: p50/p99 latency and req/s at 1 and 100 candidates.

Starts its own redis-server (loopback, no persistence) and one uvicorn worker with backend=instant (a hash
instead of a model), publishes a synthetic catalogue, and sends a bounded number of sequential requests over
real HTTP with one keep-alive httpx client: the latency of one request through HTTP parsing, validation, one
pipelined Redis round trip, prompt rendering and JSON. Target: p99 <= 15 ms at 100 candidates. The last line
is machine-readable.

    .venv/bin/python bench/service_overhead.py --requests 500
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from model_store.contract.snapshot import ItemEntry, ModelManifest, SnapshotManifest, UserEntry
from model_store.publish import Snapshot
from model_store.publish.redis import RedisPublisher

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port the kernel just found free on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Block until GET url answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready after {timeout_s} s")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Terminate a server we started; kill it if it has not exited within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server for the duration of the block, then stop it."""
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop(proc)


def synthetic_snapshot(n_users: int, n_items: int, seed: int = 0) -> Snapshot:
    """Users with codes and 10 history items; items with codes, 5% without (cold), realistic titles."""
    rng = random.Random(seed)
    titles = [f"Synthetic Movie Title Number {i} ({1950 + i % 70})" for i in range(n_items)]
    items = {
        str(i): ItemEntry(code=None if rng.random() < 0.05 else rng.getrandbits(32), title=titles[i])
        for i in range(n_items)
    }
    users = {
        str(u): UserEntry(code=rng.getrandbits(32), history=[str(i) for i in rng.sample(range(n_items), 10)])
        for u in range(n_users)
    }
    model = ModelManifest(
        model_version="bench", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2
    )
    manifest = SnapshotManifest(
        version="bench1",
        code_version="bench",
        model=model,
        n_users=n_users,
        n_items=n_items,
        created_at="2025-01-01T00:00:00+00:00",
    )
    return Snapshot(manifest=manifest, users=users, items=items)


def measure(
    url: str, n_candidates: int, n_requests: int, n_users: int, n_items: int
) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, req/s) over `n_requests` sequential requests with random users and items."""
    rng = random.Random(n_candidates)
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(max(20, n_requests // 10)):  # warm-up: connections, caches, code paths
            client.post("/predict", json={"user_id": "0", "item_ids": ["0"] * n_candidates})
        start = time.perf_counter()
        for _ in range(n_requests):
            body = {
                "user_id": str(rng.randrange(n_users)),
                "item_ids": [str(i) for i in rng.sample(range(n_items), n_candidates)],
            }
            t0 = time.perf_counter()
            response = client.post("/predict", json=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"unexpected {response.status_code}: {response.text}")
        elapsed = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return quantiles[49], quantiles[98], n_requests / elapsed


def main() -> None:
    """Start redis + uvicorn, publish, measure at 1 and 100 candidates, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="measured requests per candidate count")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    args = parser.parse_args()
    redis_port, api_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    with tempfile.TemporaryDirectory() as workdir:
        redis_args = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
        redis_args += ["--appendonly", "no", "--dir", workdir]
        with process(redis_args):
            for _ in range(100):
                try:
                    RedisPublisher.from_url(redis_url).publish(synthetic_snapshot(args.users, args.items))
                    break
                except Exception:  # not listening yet
                    time.sleep(0.1)
            env = {
                **os.environ,
                "BINLLM_BACKEND": "instant",
                "BINLLM_STORE": "redis",
                "BINLLM_REDIS_URL": redis_url,
            }
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            api_args = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
            api_args += [
                "--port",
                str(api_port),
                "--workers",
                "1",
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            with process(api_args, env) as api:
                url = f"http://127.0.0.1:{api_port}"
                wait_http(f"{url}/readyz", api)
                results = {n: measure(url, n, args.requests, args.users, args.items) for n in (1, 100)}
    print(f"service overhead, backend=instant, 1 uvicorn worker, {args.requests} sequential requests each")
    for n, (p50, p99, rps) in results.items():
        print(f"candidates={n:<4d} p50_ms={p50:6.2f} p99_ms={p99:6.2f} req_per_s={rps:7.1f}")
    print(f"p99_ms_at_100: {results[100][1]:.2f}")


if __name__ == "__main__":
    main()
