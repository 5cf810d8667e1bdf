"""`python -m app.server`: uvicorn serving `app.main:app` with the connection limits of `ServerSettings`.

The one place the server's command line is decided (`make serve`, the chart and the images run this
module), so a limit has one home. Limits, all settings (`BINLLM_SERVER__*`):

* `limit_concurrency`: connections + requests beyond it get uvicorn's 503 at once;
* `header_timeout_s`: a connection that has not sent complete request headers within it is closed
  (uvicorn has no such timer of its own: 300 connections trickling headers would otherwise stay open);
* `timeout_keep_alive_s`: idle keep-alive connections are closed after it;
* `max_header_bytes`: h11's limit on the request line plus headers (larger: 400);
* `backlog`, `timeout_graceful_shutdown_s`.

The body limit (413) is the app's own (`BINLLM_MAX_BODY_BYTES`, `app/api/guard.py`).

    BINLLM_SERVER__PORT=8000 BINLLM_SERVER__HEADER_TIMEOUT_S=5 python -m app.server
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.settings import ServerSettings, get_settings


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a header timeout: close a connection whose first request's headers
    are not complete `header_timeout_s` after it opened."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Set up as uvicorn does, then arm the header timer (the setting is read in each worker process)."""
        super().connection_made(transport)
        timeout_s = get_settings().server.header_timeout_s
        self._header_timer = self.loop.call_later(timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Disarm the timer."""
        self._header_timer.cancel()
        super().connection_lost(exc)

    def _header_timeout(self) -> None:
        if self.scope is None and not self.transport.is_closing():  # no request line + headers yet
            self.transport.close()


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
    }


def main() -> None:
    """Serve `app.main:app` with the limits of the environment's settings."""
    uvicorn.run("app.main:app", **uvicorn_options(get_settings().server))


if __name__ == "__main__":
    main()
