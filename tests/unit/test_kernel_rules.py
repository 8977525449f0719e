"""Pure kernel rules: settings, retry backoff, validation field extraction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from coalition.platform.errors import field_of
from coalition.platform.jobs import retry_delay
from coalition.platform.settings import DEV_JWT_SECRET, Settings, to_asyncpg_url


@pytest.mark.parametrize(
    "given_url",
    ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+asyncpg://u@h/db"],
)
def test_database_urls_use_asyncpg(given_url: str) -> None:
    assert to_asyncpg_url(given_url) == "postgresql+asyncpg://u@h/db"


def test_production_refuses_the_dev_signing_key() -> None:
    with pytest.raises(ValidationError, match="real secrets"):
        Settings(
            environment="production",
            database_url="postgresql://db/x",
            redis_url="redis://r",
            jwt_keys={"dev-1": DEV_JWT_SECRET},
        )


def test_active_kid_must_be_a_known_key() -> None:
    with pytest.raises(ValidationError, match="ACTIVE_KID"):
        Settings(jwt_keys={"a": "x" * 40}, jwt_active_kid="b")


@given(st.integers(min_value=1, max_value=1000))
def test_backoff_grows_and_is_capped(job_try: int) -> None:
    delay = retry_delay(job_try)
    assert 5 <= delay <= 3600
    assert retry_delay(job_try + 1) >= delay


def test_backoff_first_steps() -> None:
    assert [retry_delay(n) for n in range(1, 6)] == [5, 10, 20, 40, 80]


@pytest.mark.parametrize(
    ("message", "key", "field"),
    [
        ("Object contains unknown field `role`", "data", "role"),
        ("Object missing required field `password`", "data", "password"),
        ("Expected `str`, got `int` - at `$.email`", "data", "email"),
        ("Expected `int`, got `str` - at `$.lines[2].amount`", "data", "lines[2].amount"),
        ("Object contains unknown field `x` - at `$.terms`", "data", "terms.x"),
        ("Expected `int`", "limit", "limit"),
    ],
)
def test_offending_field_is_named(message: str, key: str, field: str) -> None:
    assert field_of(message, key) == field
