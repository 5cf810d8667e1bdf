"""A fake vLLM server that misbehaves on purpose, for the service's failure-path tests.

It speaks just enough of vLLM's protocol (`GET /health`, `GET /v1/models`, `POST /classify`,
`POST /detokenize`: its tokenizer has 1 = " Yes" and 2 = " No") and its
behaviour is switched at run time by `POST /_mode {"mode": ...}`:
    ok       every prompt gets P(Yes) = 0.25 (so a test can tell LLM scores from code scores)
    error    500 with a body that holds a traceback and a secret token (must never reach a client)
    garbage  200 with a body that is not JSON
    hang     never answers /classify or /health (until the mode changes)
    slow     answers like `ok` after `delay_s` seconds
    busy     429 Too Many Requests with Retry-After (an overloaded server shedding load)

    python -m uvicorn tests.integration.fake_vllm:app --port 8011
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.integration.conftest import free_port
from tests.integration.service_process import REPO

SECRET = "sk-FAKE-VLLM-SECRET-0123456789"
P_YES = 0.25
_state: dict[str, Any] = {"mode": "ok", "delay_s": 2.0, "classify_calls": 0}


async def _misbehave() -> Response | None:
    mode = _state["mode"]
    if mode == "hang":
        while _state["mode"] == "hang":
            await asyncio.sleep(0.05)
    if mode == "slow":
        await asyncio.sleep(float(_state["delay_s"]))
    if mode == "error":
        body = f'Traceback (most recent call last):\n  File "/srv/vllm/engine.py"\nKeyError: token={SECRET}'
        return PlainTextResponse(body, status_code=500)
    if mode == "garbage":
        return PlainTextResponse("<html>not json", status_code=200)
    if mode == "busy":
        return JSONResponse({"error": "too many requests"}, status_code=429, headers={"Retry-After": "1"})
    return None


async def health(_request: Request) -> Response:
    if _state["mode"] == "hang":
        await _misbehave()
    return PlainTextResponse("")


async def models(_request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})


async def classify(request: Request) -> Response:
    _state["classify_calls"] += 1
    body = await request.json()
    failure = await _misbehave()
    if failure is not None:
        return failure
    data = [{"index": k, "probs": [P_YES], "num_classes": 1, "label": "1"} for k in range(len(body["input"]))]
    return JSONResponse({"id": "c", "object": "list", "model": body["model"], "data": data})


async def detokenize(request: Request) -> Response:
    """Token ids as the served tokenizer would spell them: 1 is " Yes", 2 is " No", anything else " Hello"."""
    (token,) = (await request.json())["tokens"]
    return JSONResponse({"prompt": {1: " Yes", 2: " No"}.get(token, " Hello")})


async def set_mode(request: Request) -> Response:
    _state.update(json.loads(await request.body()))
    return JSONResponse(_state)


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/v1/models", models),
        Route("/classify", classify, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
        Route("/_mode", set_mode, methods=["POST"]),
    ]
)


@contextmanager
def running_fake_vllm() -> Iterator[str]:
    """The fake server in a uvicorn subprocess on a free port; yields its base URL."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "tests.integration.fake_vllm:app", "--port", str(port)]
    proc = subprocess.Popen([*args, "--log-level", "warning"], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{url}/v1/models", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "fake vLLM exited"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def set_fake_mode(url: str, mode: str, **extra: Any) -> None:
    """Switch the fake server's behaviour."""
    httpx.post(f"{url}/_mode", json={"mode": mode, **extra}, timeout=5).raise_for_status()


def fake_state(url: str) -> dict[str, Any]:
    """The fake server's state (mode, how many /classify calls it has had)."""
    response = httpx.post(f"{url}/_mode", json={}, timeout=5)
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state
