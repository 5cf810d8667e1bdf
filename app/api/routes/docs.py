"""GET /docs and /redoc: FastAPI's interactive documentation, only while no API keys are set.

With `BINLLM_API_KEYS` set (a production deployment) they answer 404: the pages load their scripts from a
public CDN and describe the API to anyone; `/openapi.json` still describes it, with the bearer scheme.

    curl -s -o /dev/null -w '%{http_code}\n' localhost:8000/docs
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

from app.api.deps import SettingsDep
from app.errors import NotFoundError
from app.settings import ServiceSettings, api_key_set

router = APIRouter(include_in_schema=False)

OPENAPI_URL = "/openapi.json"
TITLE = "binllm"


def _docs_allowed(settings: ServiceSettings) -> None:
    if api_key_set(settings):
        raise NotFoundError("the interactive docs are off while BINLLM_API_KEYS is set; see /openapi.json")


@router.get("/docs")
async def swagger_ui(settings: SettingsDep) -> HTMLResponse:
    """Swagger UI over /openapi.json."""
    _docs_allowed(settings)
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL, title=f"{TITLE} - Swagger UI", oauth2_redirect_url="/docs/oauth2-redirect"
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect(settings: SettingsDep) -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    _docs_allowed(settings)
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(settings: SettingsDep) -> HTMLResponse:
    """ReDoc over /openapi.json."""
    _docs_allowed(settings)
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{TITLE} - ReDoc")
