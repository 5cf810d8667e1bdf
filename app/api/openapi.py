"""install_openapi(app): the OpenAPI document states the limits this server really enforces.

FastAPI derives the schema from the request models, whose bounds are the hard ones (4,096 candidates); the
running limit is a setting (`BINLLM_MAX_CANDIDATES`, 256 by default). The document is built on first request,
after the lifespan resolved the settings, with `item_ids.maxItems` set to that limit, so a client (or
schemathesis) reading it sends nothing the server then refuses; with `BINLLM_API_KEYS` set it declares the
bearer scheme and requires it on the keyed routes.

    curl -s localhost:8000/openapi.json | python -c "import json,sys; d=json.load(sys.stdin); \\
        print(d['components']['schemas']['PredictRequest']['properties']['item_ids']['maxItems'])"
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.auth import BEARER_SCHEME, KEYED_ROUTES
from app.settings import ServiceSettings, api_key_set


def declare_bearer_keys(schema: dict[str, Any]) -> None:
    """The bearer scheme in `components.securitySchemes`, required by every keyed route."""
    schema.setdefault("components", {})["securitySchemes"] = {
        BEARER_SCHEME: {"type": "http", "scheme": "bearer"}
    }
    for method, path in KEYED_ROUTES:
        operation = schema["paths"][path][method.lower()]
        operation["security"] = [{BEARER_SCHEME: []}]


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with a builder that applies the running settings' limits."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            settings = getattr(app.state, "settings", None)
            if isinstance(settings, ServiceSettings):
                request = schema["components"]["schemas"]["PredictRequest"]["properties"]
                request["item_ids"]["maxItems"] = settings.max_candidates
                if api_key_set(settings):
                    declare_bearer_keys(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
