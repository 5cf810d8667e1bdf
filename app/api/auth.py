"""Which requests need an API key, and whether an Authorization header carries one of the configured keys.

Used twice on purpose: by the request guard, which checks the key when the body is first read, so a request
without a key is refused before its body is parsed (a client without a key learns nothing about what the
body should be), and by the route dependency (`app/api/deps.py`), which also puts the requirement in the
OpenAPI document.

    BINLLM_API_KEYS=k1,k2 uvicorn app.main:app
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

KEYED_ROUTES = frozenset({("POST", "/predict")})  # (method, path) that need a key when keys are configured
BEARER_SCHEME = "bearer"  # its name in the OpenAPI document's securitySchemes
KEY_REQUIRED = "a valid API key is required: send 'Authorization: Bearer <key>'"


def key_accepted(authorization: str, keys: Iterable[str]) -> bool:
    """`Authorization: Bearer <key>` with one of `keys`, every key compared in constant time."""
    scheme, _, token = authorization.partition(" ")
    presented = token.strip().encode()
    accepted = False
    for key in keys:  # no early exit: the time taken does not say which key came close
        accepted |= hmac.compare_digest(presented, key.encode())
    return scheme.lower() == "bearer" and accepted
