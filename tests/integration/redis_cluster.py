"""A real Redis Cluster for integration tests: `redis-server --cluster-enabled yes` processes on free loopback
ports, joined with `redis-cli --cluster create ... --cluster-yes`.

    with running_cluster(tmp_path, primaries=3, replicas=1) as cluster: print(cluster.url)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.integration.conftest import REDIS_SERVER, free_port, stop_process, wait_for_port

REDIS_CLI = shutil.which("redis-cli")
NODE_TIMEOUT_MS = 1000  # default: how long a silent primary has before its replica takes over


@dataclass
class ClusterHandle:
    """The nodes of a running cluster: ports, processes, and the seed URL the clients take."""

    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A `redis+cluster://` seed URL: any node will do, the client discovers the rest."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5)

    def primaries(self) -> list[int]:
        """Ports of the live nodes that are primaries now."""
        found = []
        for port in self.ports:
            if self.procs[port].poll() is None and self.node(port).info("replication")["role"] == "master":
                found.append(port)
        return found

    def replica_of(self, primary: int) -> int:
        """The port of a replica of `primary`."""
        for port in self.ports:
            if self.procs[port].poll() is not None or port == primary:
                continue
            info = self.node(port).info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == primary:
                return port
        raise LookupError(f"no replica of {primary}")

    def kill(self, port: int) -> None:
        """SIGKILL one node: no shutdown, no goodbye to the cluster."""
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)

    def wait_promoted(self, port: int, timeout_s: float = 30.0) -> None:
        """Until the node on `port` is a primary (its primary failed and it won the election)."""
        deadline = time.monotonic() + timeout_s
        while self.node(port).info("replication")["role"] != "master":
            assert time.monotonic() < deadline, f"{port} not promoted after {timeout_s} s"
            time.sleep(0.05)

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node reports cluster_state:ok with all slots covered."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = []
            for port in self.ports:
                if self.procs[port].poll() is None:
                    try:
                        info = self.node(port).cluster("info")
                        states.append(
                            info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384
                        )
                    except redis.RedisError:
                        states.append(False)
            if all(states):
                return
            assert time.monotonic() < deadline, f"cluster not ok after {timeout_s} s"
            time.sleep(0.1)


def start_node(workdir: Path, port: int, node_timeout_ms: int = NODE_TIMEOUT_MS) -> subprocess.Popen[bytes]:
    """One cluster-enabled redis-server (no persistence, its own nodes.conf in `workdir`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        str(REDIS_SERVER),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--cluster-enabled", "yes",
        "--cluster-port", str(free_port()),  # the bus port; the default, port + 10000, may be out of range
        "--cluster-config-file", str(workdir / "nodes.conf"),
        "--cluster-node-timeout", str(node_timeout_ms),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--loglevel", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_port(port, proc)
    return proc


@contextmanager
def running_cluster(
    workdir: Path,
    *,
    primaries: int = 3,
    replicas: int = 0,
    ports: list[int] | None = None,
    node_timeout_ms: int = NODE_TIMEOUT_MS,
) -> Iterator[ClusterHandle]:
    """Start `primaries * (1 + replicas)` nodes (on `ports`, default free ones) and join them into one
    cluster; stop them all after."""
    assert REDIS_SERVER is not None and REDIS_CLI is not None, "redis-server and redis-cli are needed"
    handle = ClusterHandle(ports=ports or [free_port() for _ in range(primaries * (1 + replicas))])
    try:
        for port in handle.ports:
            handle.procs[port] = start_node(workdir / str(port), port, node_timeout_ms)
        nodes = [f"127.0.0.1:{port}" for port in handle.ports]
        create = [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas)]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=60)
        handle.wait_ok()
        if replicas:  # replicas must have synced before a failover can promote one
            deadline = time.monotonic() + 30
            while sum(handle.node(p).info("replication")["role"] == "slave" for p in handle.ports) < (
                primaries * replicas
            ):
                assert time.monotonic() < deadline, "replicas did not attach in 30 s"
                time.sleep(0.1)
        yield handle
    finally:
        for proc in handle.procs.values():
            if proc.poll() is None:
                stop_process(proc)
