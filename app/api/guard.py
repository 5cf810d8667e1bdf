"""RequestGuardMiddleware: every request gets an id, a bounded body, and is stopped when its client leaves.

A pure ASGI middleware, outermost, so it sees every request before anything reads it:

* **Request id.** `X-Request-ID` from the client when it is short and plain (`[A-Za-z0-9._-]{1,64}`), a
  fresh one otherwise; kept in `scope["state"]["request_id"]`, echoed as a response header, and named in
  every 5xx message and log line, so a client can quote it and an operator can find the details.
* **Key first.** With `BINLLM_API_KEYS` set, a keyed route (`app/api/auth.py`) without a valid key is
  refused with 401 when its body is first read: before the body is parsed, so a client without a key learns
  nothing about what the body should be.
* **Body limit.** A `Content-Length` over `BINLLM_MAX_BODY_BYTES` is refused with 413 before one byte of the
  body is read; a chunked body is counted as it arrives and refused the moment it passes the limit. The
  refusal is raised as `PayloadTooLargeError` from `receive`, inside the app, so `app/api/errors.py`
  answers it like every other error.
* **Client gone.** Once the body is read, a watcher waits for `http.disconnect`; when the client hangs up
  before the answer, the request's task is cancelled, so its queued model work is dropped (the local
  scorer skips cancelled jobs and chunked requests stop at the next chunk) and nobody computes for no one.

    curl -s localhost:8000/predict -H 'content-type: application/json' -H 'X-Request-ID: abc' -d @big.json
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.api.auth import KEY_REQUIRED, KEYED_ROUTES, key_accepted
from app.errors import PayloadTooLargeError, UnauthorizedError
from app.settings import DEFAULT_MAX_BODY_BYTES, ServiceSettings, api_key_set

REQUEST_ID_HEADER = "x-request-id"
_PLAIN_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_of(scope: Scope) -> str:
    """The id the guard gave this request ('-' outside a guarded app)."""
    state = scope.get("state") or {}
    return str(state.get("request_id", "-"))


def _pick_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            if _PLAIN_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(size: int, limit: int) -> str:
    return f"the body holds more than {limit} bytes ({size} seen); at most {limit} are accepted"


class RequestGuardMiddleware:
    """Request id, body size limit and cancellation on disconnect (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _limit(scope: Scope) -> int:
        """`max_body_bytes` of the settings the lifespan resolved (the default before it ran)."""
        state = getattr(scope.get("app"), "state", None)
        settings = getattr(state, "settings", None)
        return settings.max_body_bytes if isinstance(settings, ServiceSettings) else DEFAULT_MAX_BODY_BYTES

    @staticmethod
    def _unauthorized(scope: Scope) -> UnauthorizedError | None:
        """For a keyed route with keys configured, the 401 a request without a valid key gets."""
        if (scope.get("method"), scope.get("path")) not in KEYED_ROUTES:
            return None
        settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
        keys = api_key_set(settings) if isinstance(settings, ServiceSettings) else frozenset()
        authorization = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), ""
        )
        if not keys or key_accepted(authorization, keys):
            return None
        return UnauthorizedError(KEY_REQUIRED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _pick_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self._limit(scope)
        declared = _content_length(scope)
        received = 0
        body_done = asyncio.Event()
        disconnected: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def guarded_receive() -> Message:
            nonlocal received
            if body_done.is_set():  # the watcher owns `receive` now; hand its disconnect on
                return await asyncio.shield(disconnected)
            if received == 0 and (refusal := self._unauthorized(scope)) is not None:
                raise refusal  # before one byte of the body is read, let alone parsed
            if declared is not None and declared > limit:
                raise PayloadTooLargeError(_too_large(declared, limit))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(_too_large(received, limit))
                if not message.get("more_body", False):
                    body_done.set()
            elif message["type"] == "http.disconnect" and not disconnected.done():
                disconnected.set_result(message)
            return message

        answered = asyncio.Event()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                answered.set()  # from now on a disconnect is the normal end, not a client leaving
            await send(message)

        task = asyncio.ensure_future(self.app(scope, guarded_receive, send_with_id))
        watcher = asyncio.ensure_future(self._watch(receive, body_done, disconnected, answered, task))
        try:
            await task
        except asyncio.CancelledError:
            if not disconnected.done():
                raise  # cancelled from outside (shutdown), not by the client leaving
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    @staticmethod
    async def _watch(
        receive: Receive,
        body_done: asyncio.Event,
        disconnected: asyncio.Future[Message],
        answered: asyncio.Event,
        task: asyncio.Future[None],
    ) -> None:
        """After the body: wait for the client to leave, then cancel the request's task."""
        await body_done.wait()
        message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        if not disconnected.done():
            disconnected.set_result(message)
        if not task.done() and not answered.is_set():
            metrics.CLIENT_DISCONNECTS.inc()
            task.cancel()
