"""install_error_handlers(app): the only place where exceptions become HTTP responses.

Every non-2xx answer has one shape, `{"error": {"type", "message", "param"}}` (`app.schemas.ErrorResponse`),
as vLLM's `serve/exception_handling/register.py` does it: `BinllmError`s carry their own status and type;
FastAPI's `RequestValidationError` is reshaped into the envelope (still 422) with a message that names the
bad field; Starlette's own HTTP errors (404 unknown path, 405) keep their status; anything else is logged
with its traceback and answered with a generic 500 that leaks nothing.

Nothing unbounded or secret goes back: every message and `param` is cut to a fixed length (a 1 MB unknown
field name is not echoed), a 5xx tells the client a short summary and the request id while the detail goes
to the log with credentials redacted (`app.errors.redact`). A body FastAPI could not decode (bytes not in
UTF-8/16/32, gzip, nested too deep) is a 400 `bad_request` saying what to send; one that decodes but is not
JSON (text, truncated), is not an object, or comes without `content-type: application/json` is a 422
`invalid_request` naming `body`; a body over the limit is the guard's 413.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import metrics
from app.api.guard import request_id_of
from app.errors import BinllmError, redact
from app.schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 600
MAX_PARAM_CHARS = 80
_PART_CHARS = 60  # one echoed field name or value inside a message


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def error_response(
    status: int, type_: str, message: str, param: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The envelope, counted in binllm_errors_total; message and param bounded."""
    metrics.ERRORS.labels(type_).inc()
    detail = ErrorDetail(
        type=type_,
        message=clip(message, MAX_MESSAGE_CHARS),
        param=None if param is None else clip(param, MAX_PARAM_CHARS),
    )
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=status, headers=headers)


_BODY_HINT = 'expected a JSON object like {"user_id": "42", "item_ids": ["1193", "661"]}'


def _location(loc: Sequence[Any]) -> str:
    """('body', 'item_ids', 3) -> 'item_ids[3]'; the leading 'body' is noise to a caller."""
    parts = [p for p in loc if p != "body"]
    text = ""
    for part in parts:
        name = clip(str(part), _PART_CHARS)
        text += f"[{part}]" if isinstance(part, int) else (f".{name}" if text else name)
    return text or "body"


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One readable line for pydantic's error list, and the first bad field."""
    lines = []
    params = []
    for error in errors[:5]:
        where = _location(error.get("loc", ()))
        msg = clip(str(error.get("msg", "invalid")), _PART_CHARS * 2)
        kind = error.get("type")
        if kind == "extra_forbidden":
            msg = "unknown field (allowed: user_id, item_ids, history_item_ids)"
        elif kind == "json_invalid":
            where, msg = "body", f"not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
        elif where == "body":
            msg = f"{_BODY_HINT}, got {'nothing' if kind == 'missing' else 'something else'}"
        params.append(where)
        lines.append(f"{where}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(lines) + more, (params[0] if params else None)


async def _binllm_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BinllmError)
    message = exc.public
    if exc.status_code >= 500:
        request_id = request_id_of(request.scope)
        logger.warning("%s [request %s]: %s", exc.type, request_id, redact(exc.message))
        message = f"{message} (request id {request_id})"
    return error_response(exc.status_code, exc.type, message, exc.param, exc.headers())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and "json" not in content_type.lower():
        got = clip(content_type, _PART_CHARS) or "none"
        return error_response(
            422,
            "invalid_request",
            f"send the body as JSON with content-type: application/json (got {got})",
            "body",
        )
    message, param = validation_message(exc.errors())
    return error_response(422, "invalid_request", message, param)


_UNPARSABLE = (
    "the body could not be parsed: send UTF-8 JSON, uncompressed, with content-type: application/json"
)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, BinllmError):  # raised while FastAPI read the body (e.g. too large)
        return await _binllm_error(request, exc.__cause__)
    if exc.status_code == 400:
        if exc.__cause__ is not None:
            logger.info("unparsable body: %s", clip(redact(repr(exc.__cause__)), MAX_MESSAGE_CHARS))
        return error_response(400, "bad_request", _UNPARSABLE, "body")
    type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, type_, str(exc.detail), None, exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = request_id_of(request.scope)
    logger.error(
        "unhandled error on %s %s [request %s]", request.method, request.url.path, request_id, exc_info=exc
    )
    return error_response(500, "internal_error", f"internal server error (request id {request_id})")


def install_error_handlers(app: FastAPI) -> None:
    """Register every exception handler of the service on `app`."""
    app.add_exception_handler(BinllmError, _binllm_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
