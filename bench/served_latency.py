"""What users get: /predict latency of the service started exactly as `make serve` starts it, defaults and all.

Runs `python -m app.server` with only the port set (the embedded default: in-process model, the demo snapshot
`make demo` built in artifacts/demo, every other setting at its default: dtype auto, deadline, cascade), waits
until /readyz first says ready (the model loaded and warmed up), then sends real requests: users and
candidates drawn from the published snapshot (seeded), 1, 10, 100 and 256 candidates, with one client and with
4 concurrent clients. For each it prints p50/p99 latency, the share of items the LLM scored (the rest got
the codes' score under the deadline: `score_kind` per item), degraded answers, and candidates/s (candidates
answered / wall time). The CPU model, its bf16/AMX flags, the engine /readyz names and the load average are
printed beside the figures; timings move with the machine and with whatever else runs on it.

    python bench/served_latency.py                  # full: 20/20/10/5 requests per size and client count
    python bench/served_latency.py --short          # a few requests (CI)

Last line: `candidates_per_s: X` for one client x 100 candidates (without that setting, e.g. `--short`: the
last one-client setting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from service_overhead import stop

from app.schemas import PredictResponse, ReadyResponse

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT_DIR = REPO / "artifacts/demo/snapshot"  # the default BINLLM_SNAPSHOT_DIR, what `make demo` builds
SIZES = (1, 10, 100, 256)
FULL_REQUESTS = {1: 20, 10: 20, 100: 10, 256: 5}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_description() -> dict[str, object]:
    """The CPU's model name and which bf16/AMX/vector flags it has (from /proc/cpuinfo)."""
    name, flags = "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name") and name == "unknown":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": name, "cores": os.cpu_count(), "flags": {flag: flag in flags for flag in CPU_FLAGS}}


@contextmanager
def served(port: int, log_path: Path, timeout_s: float) -> Iterator[tuple[str, ReadyResponse, float]]:
    """`python -m app.server` as `make serve` runs it (port aside); yields (url, /readyz answer, seconds to
    ready) once /readyz first says ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINLLM_")}
    env |= {"BINLLM_SERVER__HOST": "127.0.0.1", "BINLLM_SERVER__PORT": str(port)}
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.server"], cwd=REPO, env=env, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            ready = wait_ready(url, proc, timeout_s)
            yield url, ready, time.perf_counter() - started
        finally:
            stop(proc, timeout_s=30)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> ReadyResponse:
    """Poll /readyz until it first answers 200 ready; fail if the server exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode} before it was ready")
        try:
            answer = httpx.get(f"{url}/readyz", timeout=5)
            if answer.status_code == 200:
                ready = ReadyResponse.model_validate_json(answer.content)
                if ready.status == "ready":
                    return ready
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}/readyz not ready after {timeout_s} s")


def catalogue(snapshot_dir: Path) -> tuple[list[str], list[str]]:
    """User ids and item ids of the active snapshot."""
    version = snapshot_dir / (snapshot_dir / "ACTIVE").read_text(encoding="utf-8").strip()

    def ids(name: str) -> list[str]:
        with (version / name).open(encoding="utf-8") as lines:
            return [str(json.loads(line)["id"]) for line in lines if line.strip()]

    return ids("users.jsonl"), ids("items.jsonl")


@dataclass
class Setting:
    """One measured setting: candidates per request x concurrent clients."""

    candidates: int
    clients: int
    seconds: list[float]
    llm_items: int
    items: int
    degraded: dict[str, int]
    wall_s: float

    def line(self) -> dict[str, object]:
        """The JSON line printed for it."""
        return {
            "candidates": self.candidates,
            "clients": self.clients,
            "requests": len(self.seconds),
            "p50_s": round(float(np.percentile(self.seconds, 50)), 3),
            "p99_s": round(float(np.percentile(self.seconds, 99)), 3),
            "llm_share": round(self.llm_items / self.items, 4),
            "degraded": self.degraded,
            "candidates_per_s": round(self.items / self.wall_s, 2),
        }


async def measure(
    url: str, users: list[str], items: list[str], candidates: int, clients: int, requests: int, seed: int
) -> Setting:
    """`requests` requests of `candidates` candidates, `clients` at a time; every answer parsed and counted."""
    rng = random.Random(seed * 1_000 + candidates * 10 + clients)
    bodies = [
        {"user_id": rng.choice(users), "item_ids": rng.sample(items, candidates)} for _ in range(requests)
    ]
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    setting = Setting(candidates, clients, [], 0, 0, {}, 0.0)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600) as http:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await http.post("/predict", json=body)
                setting.seconds.append(time.perf_counter() - started)
                response.raise_for_status()
                answer = PredictResponse.model_validate_json(response.content)
                setting.items += len(answer.scores)
                setting.llm_items += sum(score.score_kind != "codes" for score in answer.scores)
                if answer.degraded is not None:
                    setting.degraded[answer.degraded] = setting.degraded.get(answer.degraded, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    setting.wall_s = time.perf_counter() - started
    return setting


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--short", action="store_true", help="2 requests per setting, 1 and 10 candidates")
    parser.add_argument("--requests", type=int, help="requests per setting (default: 20/20/10/5 by size)")
    parser.add_argument("--sizes", default=None, help="candidates per request, comma-separated")
    parser.add_argument("--clients", default="1,4", help="concurrent clients, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    parser.add_argument("--log", type=Path, help="the server's log (default: a temporary file)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    """Start the service, measure every setting, print a JSON line each and the summary; return the lines."""
    args = parse_args(argv)
    sizes = (
        [int(s) for s in args.sizes.split(",")] if args.sizes else ([1, 10] if args.short else list(SIZES))
    )
    clients = [int(c) for c in args.clients.split(",")]
    users, items = catalogue(SNAPSHOT_DIR)
    log_path = args.log or Path(os.environ.get("TMPDIR", "/tmp")) / f"served_latency.{os.getpid()}.log"
    lines: list[dict[str, object]] = []
    with served(free_port(), log_path, args.ready_timeout_s) as (url, ready, ready_s):
        header = {
            **cpu_description(),
            "backend": ready.backend,
            "engine": ready.engine,
            "seconds_to_ready": round(ready_s, 1),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
        }
        print(json.dumps(header), flush=True)
        for n_clients in clients:
            for size in sizes:
                requests = args.requests or (2 if args.short else FULL_REQUESTS.get(size, 5))
                setting = asyncio.run(measure(url, users, items, size, n_clients, requests, args.seed))
                lines.append(setting.line())
                print(json.dumps(lines[-1]), flush=True)
    print(json.dumps({"load_average_after": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    one_client = [line for line in lines if line["clients"] == 1] or lines
    summary = next((line for line in one_client if line["candidates"] == 100), one_client[-1])
    print(f"candidates_per_s: {summary['candidates_per_s']}", flush=True)
    return lines


if __name__ == "__main__":
    main(sys.argv[1:])
