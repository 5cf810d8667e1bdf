"""What clients see while a Redis Cluster primary fails over: answers, errors and latency, with and without
the failover retries.

Starts a 6-node Redis Cluster (3 primaries, 1 replica each, `--cluster-node-timeout`), publishes a small
synthetic snapshot, and runs the service (`uvicorn app.main:app`, backend=instant, so the LLM takes no time
and every millisecond is the store's) against it, once per setting of `BINLLM_REDIS_FAILOVER_S`. Each run:
`--clients` threads post /predict back to back; after a second, the primary holding the version pointer is
SIGKILLed; the run goes on until its replica is promoted, every slot is served again, and `--after-s` more.
It prints, per setting, the answers by status over the whole run and over the failover window (from the kill
to the cluster's recovery; a request is in it when it was in flight at any moment of it), that window's
length, and the latency of the window's answers. The baseline is the same run with
`BINLLM_REDIS_FAILOVER_S=0` (no retries). Loopback only.

    .venv/bin/python bench/cluster_failover.py --node-timeout-ms 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.settings import ServiceSettings  # noqa: E402
from model_store.contract.snapshot import (  # noqa: E402  (after the path insert)
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UserEntry,
    active_key,
    split_cluster_url,
)
from model_store.publish import Snapshot  # noqa: E402
from model_store.publish.cluster import RedisClusterPublisher  # noqa: E402
from tests.integration.redis_cluster import running_cluster  # noqa: E402
from tests.integration.service_process import running_service  # noqa: E402

N_USERS = 200
N_ITEMS = 60


@dataclass
class Outcome:
    """One request: when it started (monotonic), how long it took, what came back."""

    start: float
    seconds: float
    status: str


@dataclass
class FailoverRun:
    """Every request of one run, and when the primary was killed and the cluster had recovered."""

    failover_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    killed_at: float = 0.0
    recovered_at: float = 0.0

    def summary(self) -> dict[str, object]:
        """The figures printed for this setting."""
        window = [
            o for o in self.outcomes if o.start <= self.recovered_at and o.start + o.seconds >= self.killed_at
        ]
        latencies = sorted(o.seconds for o in window if o.status == "200")
        return {
            "redis_failover_s": self.failover_s,
            "requests": len(self.outcomes),
            "statuses": dict(Counter(o.status for o in self.outcomes)),
            "window_s": round(self.recovered_at - self.killed_at, 2),
            "window_requests": len(window),
            "window_statuses": dict(Counter(o.status for o in window)),
            "window_p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "window_max_s": round(latencies[-1], 3) if latencies else None,
        }


def synthetic_snapshot() -> Snapshot:
    """200 users with 3-item histories over 60 titled, coded items."""
    items = {f"i{k}": ItemEntry(code=(k * 7919) % 2**32, title=f"film {k}") for k in range(N_ITEMS)}
    users = {
        f"u{k}": UserEntry(code=(k * 104729) % 2**32, history=[f"i{(k + j) % N_ITEMS}" for j in range(3)])
        for k in range(N_USERS)
    }
    model = ModelManifest(model_version="m", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2)
    manifest = SnapshotManifest(
        version="a", code_version="c", model=model, n_users=N_USERS, n_items=N_ITEMS,
        created_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    return Snapshot(manifest=manifest, users=users, items=items)


def run_failover(workdir: Path, failover_s: float, args: argparse.Namespace) -> FailoverRun:
    """One cluster, one service with `BINLLM_REDIS_FAILOVER_S=failover_s`, one kill."""
    run = FailoverRun(failover_s)
    with running_cluster(workdir, primaries=3, replicas=1, node_timeout_ms=args.node_timeout_ms) as cluster:
        publisher = RedisClusterPublisher.from_url(split_cluster_url(cluster.url)[0], batch_size=50)
        publisher.publish(synthetic_snapshot())
        with running_service(
            cluster.url, start_timeout_s=120, BINLLM_REDIS_FAILOVER_S=str(failover_s)
        ) as url:
            stop = threading.Event()
            lock = threading.Lock()

            def load(client_no: int) -> None:
                with httpx.Client(timeout=60) as client:
                    k = client_no
                    while not stop.is_set():
                        k += args.clients
                        body = {
                            "user_id": f"u{k % N_USERS}",
                            "item_ids": [f"i{(k + j) % N_ITEMS}" for j in range(4)],
                        }
                        start = time.monotonic()
                        try:
                            status = str(client.post(f"{url}/predict", json=body).status_code)
                        except httpx.TransportError as exc:
                            status = type(exc).__name__
                        with lock:
                            run.outcomes.append(Outcome(start, time.monotonic() - start, status))

            threads = [threading.Thread(target=load, args=(n,)) for n in range(args.clients)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(1.0)
                victim = int(publisher.client.get_node_from_key(active_key()).port)
                replica = cluster.replica_of(victim)
                run.killed_at = time.monotonic()
                cluster.kill(victim)
                cluster.wait_promoted(replica, timeout_s=60)
                cluster.wait_ok(timeout_s=60)
                run.recovered_at = time.monotonic()
                time.sleep(args.after_s)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=120)
    return run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--node-timeout-ms", type=int, default=2000, help="the cluster's cluster-node-timeout"
    )
    parser.add_argument("--clients", type=int, default=2, help="threads posting /predict back to back")
    parser.add_argument("--after-s", type=float, default=2.0, help="load kept up after the recovery")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(json.dumps({"node_timeout_ms": args.node_timeout_ms, "clients": args.clients}), flush=True)
    with tempfile.TemporaryDirectory(prefix="binllm-failover-") as tmp:
        default = ServiceSettings.model_fields["redis_failover_s"].default
        for n, failover_s in enumerate((0.0, default)):  # baseline (no retries), then the default
            summary = run_failover(Path(tmp) / str(n), failover_s, args).summary()
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
