"""Every failure the service reports, classified by blame; `app/api/errors.py` maps them to HTTP once.

Client errors (4xx) are the caller's to fix; server errors (5xx) are ours or a dependency's. Each class
carries its HTTP `status_code` and a stable `type` string for the `{"error": {"type", "message", "param"}}`
envelope, so code raising them never touches HTTP (no FastAPI import here), in the manner of vLLM's
`vllm/exceptions.py`.

    python -c "from app.errors import UnknownItemsError as E; e = E(['i9']); print(e.status_code, e)"
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@]+@")
_BEARER = re.compile(r"(?i)\b(bearer|token|api[_-]?key|password)([\s=:]+)[^\s,;'\"]+")


def redact(text: str) -> str:
    """`text` with URL credentials (`redis://:pw@host`) and bearer tokens / key=value secrets masked."""
    return _BEARER.sub(r"\1\2***", _URL_CREDENTIALS.sub(r"\1***@", text))


class BinllmError(Exception):
    """Base class; `param` names the request field at fault, when one is.

    `message` is the detail (logged, redacted, for 5xx); `public` is what a client is told. Client errors
    are about the request, so their message is public; server errors show a fixed summary unless a safe
    one is given, because their details (URLs, paths, a backend's error body) are not the client's business.
    """

    status_code: int = 500
    type: str = "internal_error"
    summary: str | None = None  # the client's message for this class; None = `message` itself is safe

    def __init__(self, message: str, *, param: str | None = None, public: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.public = public or self.summary or message

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. Retry-After)."""
        return {}


class ClientError(BinllmError):
    """The request is wrong; retrying it unchanged will fail again."""

    status_code = 400
    type = "bad_request"


class InvalidRequestError(ClientError):
    """The body is well-formed JSON but breaks a rule (too many candidates, unknown field...)."""

    status_code = 422
    type = "invalid_request"


class NotFoundError(ClientError):
    """The route exists but is not served here (e.g. /metrics moved to BINLLM_METRICS_PORT)."""

    status_code = 404
    type = "not_found"


class UnknownItemsError(ClientError):
    """Some ids are not in the active catalogue; carries them so the caller can drop exactly those."""

    status_code = 404
    type = "unknown_items"

    def __init__(self, ids: Sequence[str], *, param: str = "item_ids") -> None:
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:20])
        more = f" (and {len(self.ids) - 20} more)" if len(self.ids) > 20 else ""
        super().__init__(f"unknown {param}: {shown}{more}", param=param)


class PayloadTooLargeError(ClientError):
    """The body is over `BINLLM_MAX_BODY_BYTES`; refused before it is read."""

    status_code = 413
    type = "payload_too_large"


class UnauthorizedError(ClientError):
    """API keys are configured and the request carries none of them as a bearer token."""

    status_code = 401
    type = "unauthorized"

    def headers(self) -> dict[str, str]:
        """How to authenticate (RFC 6750)."""
        return {"WWW-Authenticate": "Bearer"}


class ServerError(BinllmError):
    """Our fault or a dependency's; the caller may retry later."""

    status_code = 500
    type = "internal_error"
    summary = "internal server error"


class _RetryLater(ServerError):
    """A dependency is down for now; 503 with Retry-After so clients and load balancers back off."""

    status_code = 503
    retry_after_s: int = 1

    def headers(self) -> dict[str, str]:
        """Retry-After in whole seconds."""
        return {"Retry-After": str(self.retry_after_s)}


class BackendUnavailableError(_RetryLater):
    """The scoring backend (vLLM, local model) cannot answer now: connection refused, timeout, overload."""

    type = "backend_unavailable"
    summary = "the scoring backend cannot answer now; retry later"


class StoreUnavailableError(_RetryLater):
    """The catalogue store (Redis) cannot answer now."""

    type = "store_unavailable"
    summary = "the catalogue store cannot answer now; retry later"


class SnapshotMissingError(_RetryLater):
    """The store answers but no snapshot is active yet (nothing published), or it is incomplete."""

    type = "snapshot_missing"
    summary = "no complete snapshot is active; retry later"


class InvalidSnapshotError(SnapshotMissingError):
    """A snapshot version failed validation when loaded (a code wider than the manifest's bits, a negative
    code, counts that disagree with the manifest, bytes that are not UTF-8...): the store refuses it.

    `file` names what failed (`v2/items.jsonl`, `items`), `reason` is one short word for metrics
    (`code_width`, `code_sign`, `count`, `encoding`, `malformed`, `manifest`, `missing`).
    """

    def __init__(self, message: str, *, file: str, reason: str) -> None:
        super().__init__(message)
        self.file = file
        self.reason = reason


class NotReadyError(_RetryLater):
    """/readyz: some dependency is not ready; the message lists every reason."""

    type = "not_ready"
    summary = "not ready"


class OverloadedError(_RetryLater):
    """More candidates are queued or being scored than `BINLLM_MAX_QUEUED_CANDIDATES`: load is shed."""

    type = "overloaded"
    summary = "too much work queued; retry shortly"


class DeadlineExceededError(ServerError):
    """The backend did not answer within `BINLLM_DEADLINE_S` (and the fallback is off or unavailable)."""

    status_code = 504
    type = "deadline_exceeded"
    summary = "the scoring backend did not answer in time; retry later"

    def headers(self) -> dict[str, str]:
        """Retry-After in whole seconds."""
        return {"Retry-After": "1"}


class BackendResponseError(ServerError):
    """The backend answered, but not with what the protocol promises (wrong count, bad JSON): a 502."""

    status_code = 502
    type = "backend_bad_response"
    summary = "the scoring backend gave an unusable answer"
