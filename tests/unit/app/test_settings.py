"""ServiceSettings: derived pool sizes and the start-up refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import ServerSettings, ServiceSettings, VllmSettings, api_key_set, pool_size


def test_pool_sizes_are_derived_from_the_admission_limit() -> None:
    settings = ServiceSettings(server=ServerSettings(limit_concurrency=512))
    assert settings.redis_max_connections == settings.vllm.max_connections == pool_size(512) == 64
    bigger = ServiceSettings(server=ServerSettings(limit_concurrency=2000))
    assert bigger.redis_max_connections == bigger.vllm.max_connections == 250


def test_explicit_pool_sizes_are_kept() -> None:
    settings = ServiceSettings(redis_max_connections=7, vllm=VllmSettings(max_connections=3))
    assert (settings.redis_max_connections, settings.vllm.max_connections) == (7, 3)


def test_a_pool_wait_not_below_the_deadline_is_refused() -> None:
    with pytest.raises(ValidationError, match="POOL_WAIT_S"):
        ServiceSettings(pool_wait_s=5.0, deadline_s=5.0)
    assert ServiceSettings(pool_wait_s=5.0, deadline_s=None).pool_wait_s == 5.0


def test_the_pool_wait_is_derived_inside_the_deadline() -> None:
    assert ServiceSettings().pool_wait_s == 2.0
    assert ServiceSettings(deadline_s=1.0).pool_wait_s == 0.5


@pytest.mark.parametrize("value", ["", ",", " , ", " "])
def test_api_keys_set_but_empty_is_a_start_up_error(value: str) -> None:
    """Set but holding no key would turn authentication off without a word: refused instead."""
    with pytest.raises(ValidationError, match="BINLLM_API_KEYS is set but holds no key"):
        ServiceSettings(api_keys=value)


def test_api_keys_unset_means_no_authentication() -> None:
    assert api_key_set(ServiceSettings()) == frozenset()
    assert api_key_set(ServiceSettings(api_keys=" k1 ,k2,")) == {"k1", "k2"}
