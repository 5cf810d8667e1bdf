"""POST /predict: parse the body, hand it to `PredictService.predict`, return its response."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import ApiKeyDep, ServiceDep
from app.schemas import ErrorResponse, PredictRequest, PredictResponse

router = APIRouter()

_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Body not parsable: not UTF-8 JSON, compressed, too deep."},
    401: {"model": ErrorResponse, "description": "BINLLM_API_KEYS is set and no valid bearer token came."},
    404: {"model": ErrorResponse, "description": "Unknown item ids (named in the message)."},
    413: {"model": ErrorResponse, "description": "Body over BINLLM_MAX_BODY_BYTES; refused unread."},
    422: {"model": ErrorResponse, "description": "Body breaks a rule (field, type, candidate limit)."},
    500: {"model": ErrorResponse, "description": "Unexpected; the message names a request id."},
    502: {"model": ErrorResponse, "description": "The backend answered nonsense and the fallback is off."},
    503: {
        "model": ErrorResponse,
        "description": "Store or snapshot unavailable, overloaded, or backend down with the fallback off.",
        "headers": _RETRY_AFTER,
    },
    504: {
        "model": ErrorResponse,
        "description": "The backend missed the deadline and the fallback is off.",
        "headers": _RETRY_AFTER,
    },
}


@router.post("/predict", response_model=PredictResponse, responses=_ERRORS, dependencies=[ApiKeyDep])
async def predict(body: PredictRequest, service: ServiceDep) -> PredictResponse:
    """Click probabilities of `item_ids` for `user_id`, in request order."""
    return await service.predict(body)
