"""`python -m app.server`: uvicorn serving `app.main:app` with the connection limits of `ServerSettings`.

The one place the server's command line is decided (`make serve`, the chart and the images run this
module), so a limit has one home. Limits, all settings (`BINLLM_SERVER__*`):

* `limit_concurrency`: connections + requests beyond it get uvicorn's 503 at once;
* `header_timeout_s`: a request whose headers are not complete within it (from the connection's opening,
  or from the first byte of a later request on a kept-alive connection) has its connection closed (uvicorn
  has no such timer of its own: 300 connections trickling headers would otherwise stay open);
* `body_timeout_s`: a body not complete within it of its headers gets 408 and a closed connection (a body
  sent one byte every 2 s would otherwise hold a connection, and a concurrency slot, for ever);
* `timeout_keep_alive_s`: idle keep-alive connections are closed after it;
* `max_header_bytes`: h11's limit on the request line plus headers (larger: 400);
* `backlog`, `timeout_graceful_shutdown_s`.

The access log leaves query strings out (`RedactQueryFilter`). The body limit (413) is the app's own
(`BINLLM_MAX_BODY_BYTES`, `app/api/guard.py`).

    BINLLM_SERVER__PORT=8000 BINLLM_SERVER__HEADER_TIMEOUT_S=5 python -m app.server
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.settings import ServerSettings, get_settings

REQUEST_TIMEOUT_BODY = json.dumps(
    {
        "error": {
            "type": "request_timeout",
            "message": "the request body did not arrive in time",
            "param": None,
        }
    },
    separators=(",", ":"),
).encode()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus two timers uvicorn lacks, so a slow client cannot hold a connection:

    * header timeout: a request's line and headers must be complete `header_timeout_s` after the connection
      opened (first request) or after the request's first byte arrived (every later request on a kept-alive
      connection); otherwise the connection is closed;
    * body timeout: once the headers are in, the whole body must arrive within `body_timeout_s`; otherwise
      the app sees the client leave (its work is cancelled) and the client gets 408 `request_timeout` and a
      closed connection.

    The settings are read in each worker process (`get_settings()`).
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Set up as uvicorn does, then arm the header timer of the first request."""
        super().connection_made(transport)
        server = get_settings().server
        self._header_timeout_s = server.header_timeout_s
        self._body_timeout_s = server.body_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Disarm the timers."""
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """The first byte of a request on a kept-alive connection starts its header timer; complete headers
        that announce a body start the body timer."""
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()
        super().data_received(data)
        if self._body_timer is None and self.conn.their_state is h11.SEND_BODY:
            self._body_timer = self.loop.call_later(self._body_timeout_s, self._body_timeout)

    def on_response_complete(self) -> None:
        """The request is over: its timers go; buffered bytes of a next request start that one's timer."""
        self._cancel_timers()
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._header_timeout)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # headers not complete
            self.transport.close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return  # the body is complete
        cycle.disconnected = True  # the app's receive() now says http.disconnect; what it sends is dropped
        cycle.message_event.set()
        if not cycle.response_started:
            head = (
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(REQUEST_TIMEOUT_BODY)).encode() + b"\r\n\r\n"
            )
            self.transport.write(head + REQUEST_TIMEOUT_BODY)
        self.transport.close()


class RedactQueryFilter(logging.Filter):
    """The access log's request path without its query string (`/healthz?[redacted]`): a query can carry a
    key (`?api_key=...`) or a user's ids, and access logs are kept and shipped far and wide."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite uvicorn's access record (args: client, method, path, HTTP version, status)."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with `RedactQueryFilter` on the access log (applied in every worker)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": f"{__name__}.RedactQueryFilter"}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    return config


def uvicorn_options(server: ServerSettings) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.run` for these settings."""
    return {
        "host": server.host,
        "port": server.port,
        "workers": server.workers,
        "http": GuardedH11Protocol,
        "limit_concurrency": server.limit_concurrency,
        "timeout_keep_alive": server.timeout_keep_alive_s,
        "h11_max_incomplete_event_size": server.max_header_bytes,
        "backlog": server.backlog,
        "timeout_graceful_shutdown": server.timeout_graceful_shutdown_s,
        "proxy_headers": server.proxy_headers,
        "server_header": False,
        "log_config": log_config(),
    }


def main() -> None:
    """Serve `app.main:app` with the limits of the environment's settings."""
    uvicorn.run("app.main:app", **uvicorn_options(get_settings().server))


if __name__ == "__main__":
    main()
