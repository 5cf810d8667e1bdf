"""The docker-compose.yml of the repository root, as `docker compose config` would see it with no .env file.

Compose interpolates `${VAR:-default}` before it validates; these fixtures do the same with an empty
environment, so every test checks the defaults a fresh checkout runs with. `scaled` is docker-compose.yml with
docker-compose.scale.yml merged over it (`docker compose -f docker-compose.yml -f docker-compose.scale.yml`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCALE_FILE = REPO / "docker-compose.scale.yml"
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${V}, $V, ${V:-d} (unset or empty), ${V-d} (unset), $$ -> $."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, default = match.group("op"), match.group("default") or ""
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        if op in (":?", "?") and not value:
            raise ValueError(f"required variable {name} is unset: {default}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def merge_override(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, for mappings: key by key, recursively; anything else replaces.

    Compose v2 and v1.29 agree on mappings (`environment`, `depends_on`, ...) but not on every sequence, so
    docker-compose.scale.yml holds mappings and scalars only (tests/compose/test_compose_scale.py checks it).
    """
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge_override(base[key], value) if key in base else value
        return merged
    return override


@pytest.fixture(scope="session")
def compose_text() -> str:
    """docker-compose.yml with every variable at its default."""
    return interpolate(COMPOSE_FILE.read_text(), env={})


@pytest.fixture(scope="session")
def compose(compose_text: str) -> dict[str, Any]:
    """The interpolated compose file as plain data."""
    data: dict[str, Any] = yaml.safe_load(compose_text)
    return data


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Service name -> definition."""
    return dict(compose["services"])


@pytest.fixture(scope="session")
def compose_with() -> Callable[[dict[str, str]], dict[str, Any]]:
    """The compose file as plain data with some variables set (the rest at their defaults)."""

    def load(env: dict[str, str]) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env=env))
        return data

    return load


@pytest.fixture(scope="session")
def scale_override() -> dict[str, Any]:
    """docker-compose.scale.yml, interpolated, as plain data."""
    data: dict[str, Any] = yaml.safe_load(interpolate(SCALE_FILE.read_text(), env={}))
    return data


@pytest.fixture(scope="session")
def scaled(compose: dict[str, Any], scale_override: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml with docker-compose.scale.yml merged over it."""
    data: dict[str, Any] = merge_override(compose, scale_override)
    return data
