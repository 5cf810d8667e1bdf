"""Request dependencies as `Annotated` aliases, resolved from `app.state` (set by the lifespan in app.main).

Nothing here is a module global, so several apps (tests) can live in one process side by side.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.auth import KEY_REQUIRED, key_accepted
from app.errors import UnauthorizedError
from app.scorers.base import Scorer
from app.service import PredictService
from app.settings import ServiceSettings, api_key_set
from app.store.base import CatalogStore


def get_settings_dep(request: Request) -> ServiceSettings:
    """The settings the app was created with."""
    settings: ServiceSettings = request.app.state.settings
    return settings


def get_store(request: Request) -> CatalogStore:
    """The catalogue store opened by the lifespan."""
    store: CatalogStore = request.app.state.store
    return store


def get_scorer(request: Request) -> Scorer:
    """The scoring backend started by the lifespan."""
    scorer: Scorer = request.app.state.scorer
    return scorer


def require_api_key(request: Request) -> None:
    """With BINLLM_API_KEYS set, the request must carry one of them as a bearer token (401 otherwise);
    compared in constant time."""
    keys = api_key_set(get_settings_dep(request))
    if keys and not key_accepted(request.headers.get("authorization", ""), keys):
        raise UnauthorizedError(KEY_REQUIRED)


def get_service(request: Request) -> PredictService:
    """The request logic bound to this app's store and scorer."""
    service: PredictService = request.app.state.service
    return service


SettingsDep = Annotated[ServiceSettings, Depends(get_settings_dep)]
StoreDep = Annotated[CatalogStore, Depends(get_store)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
ServiceDep = Annotated[PredictService, Depends(get_service)]
ApiKeyDep = Depends(require_api_key)
