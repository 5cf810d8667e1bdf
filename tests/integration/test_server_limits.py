"""Slow and greedy clients against `python -m app.server` (real uvicorn with the service's limits, a real
redis-server): connections trickling headers are closed, huge bodies are refused with 413 before they are
read, and a request whose client hangs up is cancelled.

    .venv/bin/pytest -m integration tests/integration/test_server_limits.py -s
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_store.contract.fusion import CodeScore
from model_store.publish.redis import RedisPublisher
from tests.integration.chaos import report
from tests.integration.conftest import free_port
from tests.integration.fake_vllm import running_fake_vllm, set_fake_mode
from tests.integration.service_process import REPO, running_service
from tests.integration.test_service_redis import counter, make_snapshot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[str]:
    with running_fake_vllm() as url:
        yield url


@pytest.fixture(scope="module")
def server(redis_server: str, fake_vllm: str) -> Iterator[str]:
    """`python -m app.server` with 1 s header and body timeouts, backend=vllm on the fake server."""
    snapshot = make_snapshot("v1")
    manifest = snapshot.manifest.model_copy(
        update={
            "code_score": CodeScore(bits=32, scale=0.1, bias=0.0, unknown_user_code=0, unknown_item_code=0)
        }
    )
    RedisPublisher.from_url(redis_server).publish(
        snapshot.__class__(manifest, snapshot.users, snapshot.items)
    )
    port = free_port()
    env = {
        **os.environ,
        "BINLLM_STORE": "redis",
        "BINLLM_REDIS_URL": redis_server,
        "BINLLM_BACKEND": "vllm",
        "BINLLM_VLLM__BASE_URL": fake_vllm,
        "BINLLM_DEADLINE_S": "20",
        "BINLLM_SERVER__PORT": str(port),
        "BINLLM_SERVER__HEADER_TIMEOUT_S": "1",
        "BINLLM_SERVER__BODY_TIMEOUT_S": "1",
    }
    proc = subprocess.Popen([sys.executable, "-m", "app.server"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, "app.server exited"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def closed_by_server(sock: socket.socket) -> tuple[bool, bytes]:
    """Whether the server has closed `sock` (reading what it sent first), without waiting more than 0.5 s
    for a connection that is still open."""
    sock.settimeout(0.5)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return False, received
    except OSError:  # reset by the server
        return True, received
    return True, received


def send_unless_closed(sock: socket.socket, data: bytes) -> bool:
    """Send `data`; False when the server has already closed the connection."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def test_connections_trickling_headers_are_closed_after_the_header_timeout(server: str) -> None:
    socks = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=5)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        socks.append(sock)
    time.sleep(2.5)
    closed = sum(closed_by_server(sock)[0] for sock in socks)
    for sock in socks:
        sock.close()
    report(f"slow headers: {closed} of {len(socks)} connections closed by the server after 2.5 s")
    assert closed == len(socks)
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_a_kept_alive_connections_next_request_trickling_headers_is_closed(server: str) -> None:
    """The header timeout covers every request on a connection, not only its first."""
    socks = []
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        socks.append(sock)
    sent = [False] * len(socks)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # the next request's head, one header line every 0.3 s
        for k, sock in enumerate(socks):
            line = b"X-Slow: 1\r\n" if sent[k] else b"GET /healthz HTTP/1.1\r\n"
            sent[k] = sent[k] or send_unless_closed(sock, line)
        time.sleep(0.3)
    closed = 0
    for sock in socks:
        try:
            closed += closed_by_server(sock)[0]
        finally:
            sock.close()
    report(
        f"slow headers on a kept-alive connection: {closed} of {len(socks)} closed by the server after 2.5 s"
    )
    assert closed == len(socks)


def test_a_body_trickled_after_complete_headers_gets_408_and_is_closed(server: str) -> None:
    socks = []
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=5)
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
        sock.sendall(head + b"{")
        socks.append(sock)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # one byte every 0.3 s per connection
        for sock in socks:
            send_unless_closed(sock, b" ")
        time.sleep(0.3)
    answers = []
    for sock in socks:
        try:
            answers.append(closed_by_server(sock))
        finally:
            sock.close()
    closed = sum(done for done, _ in answers)
    timed_out = sum(reply.startswith(b"HTTP/1.1 408") for _, reply in answers)
    report(f"slow body: {closed} of {len(socks)} closed by the server after 2.5 s, {timed_out} with 408")
    assert closed == timed_out == len(socks)
    assert b'"type":"request_timeout"' in answers[0][1]
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_a_100_mb_body_is_refused_with_413_before_it_is_read(server: str) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=5) as sock:
        start = time.perf_counter()
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n"
        sock.sendall(head + b'{"user_id": "')  # nothing more is sent
        reply = sock.recv(4096)
        seconds = time.perf_counter() - start
    status_line = reply.split(b"\r\n")[0].decode()
    report(f"100 MB declared: {status_line} after {seconds:.3f} s")
    assert reply.startswith(b"HTTP/1.1 413") and seconds < 2


def test_a_request_whose_client_hangs_up_is_cancelled(server: str, fake_vllm: str) -> None:
    set_fake_mode(fake_vllm, "hang")
    before = counter(server, "binllm_client_disconnects_total")
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server}/predict", json={"user_id": "u1", "item_ids": ["i1"]}, timeout=0.5)
        time.sleep(0.5)
    finally:
        set_fake_mode(fake_vllm, "ok")
    assert counter(server, "binllm_client_disconnects_total") - before == 1
    assert counter(server, "binllm_request_duration_seconds_count", route="/predict", status="499") >= 1


def test_metrics_can_move_to_their_own_port(redis_server: str, server: str) -> None:
    port = free_port()
    with running_service(redis_server, BINLLM_METRICS_PORT=str(port)) as url:
        assert httpx.post(f"{url}/predict", json={"user_id": "u1", "item_ids": ["i1"]}).status_code == 200
        moved = httpx.get(f"{url}/metrics")
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert moved.status_code == 404 and moved.json()["error"]["type"] == "not_found"
    assert scraped.status_code == 200 and "binllm_request_duration_seconds_count" in scraped.text


def test_the_access_log_leaves_query_strings_out(tmp_path: Path, redis_server: str) -> None:
    """A key sent as `?api_key=` (or anything else in a query string) never reaches the access log."""
    port = free_port()
    env = {
        **os.environ,
        "BINLLM_STORE": "redis",
        "BINLLM_REDIS_URL": redis_server,
        "BINLLM_BACKEND": "instant",
    }
    env["BINLLM_SERVER__PORT"] = str(port)
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.server"], cwd=REPO, env=env, stdout=sink, stderr=sink
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            secret = "sk-QUERY-SECRET-0123456789"
            assert httpx.get(f"{url}/healthz?api_key={secret}&x=1", timeout=5).status_code == 200
            time.sleep(0.3)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    text = log.read_text()
    assert '"GET /healthz?[redacted] HTTP/1.1" 200' in text and secret not in text
