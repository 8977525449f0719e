"""Password hashing and access-token rules (no I/O)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalition.platform.db import set_clock, utcnow
from coalition.platform.errors import InvalidToken, TokenExpired
from coalition.platform.security import (
    decode_access_token,
    hash_password,
    issue_access_token,
    new_secret,
    secret_digest,
    verify_password,
)
from coalition.platform.settings import Settings

SETTINGS = Settings(jwt_keys={"k1": "unit-test-key-0123456789abcdef0123"}, jwt_active_kid="k1")


def test_argon2id_hash_verifies_only_the_right_password() -> None:
    hashed = hash_password("s3cret pass")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "s3cret pass")
    assert not verify_password(hashed, "s3cret pas")
    assert not verify_password(None, "s3cret pass")
    assert not verify_password("not-a-hash", "s3cret pass")


def test_secrets_are_prefixed_random_and_stored_as_digests() -> None:
    a, b = new_secret("crt"), new_secret("crt")
    assert a.startswith("crt_") and a != b and len(a) > 40
    assert secret_digest(a) == secret_digest(a) and len(secret_digest(a)) == 64


def _token(now: datetime) -> str:
    token, _ = issue_access_token(
        SETTINGS, user_id=uuid.uuid4(), org_id=uuid.uuid4(), role="finance", now=now
    )
    return token


def test_access_token_round_trip() -> None:
    claims = decode_access_token(SETTINGS, _token(datetime.now(UTC)))
    assert claims.role == "finance"


def test_expired_token_is_refused() -> None:
    with pytest.raises(TokenExpired):
        decode_access_token(SETTINGS, _token(datetime.now(UTC) - timedelta(hours=2)))


def test_times_are_checked_against_the_applications_clock() -> None:
    """A token issued while the clock runs two days ahead (outside production) is valid on
    that clock and not yet valid on the wall clock; one issued before its lifetime is over
    is expired on the shifted clock."""
    ahead = SETTINGS.model_copy(update={"clock_offset_seconds": 2 * 86_400})
    issued = _token(datetime.now(UTC) + timedelta(days=2))
    earlier = _token(datetime.now(UTC))
    with pytest.raises(InvalidToken, match="not yet valid"):
        decode_access_token(SETTINGS, issued)
    try:
        set_clock(ahead)
        assert utcnow() - datetime.now(UTC) > timedelta(days=2) - timedelta(minutes=1)
        assert decode_access_token(SETTINGS, issued).role == "finance"
        with pytest.raises(TokenExpired):
            decode_access_token(SETTINGS, earlier)
    finally:
        set_clock(SETTINGS)
    assert abs(utcnow() - datetime.now(UTC)) < timedelta(seconds=1)
    assert decode_access_token(SETTINGS, earlier).role == "finance"


def test_production_refuses_a_shifted_clock() -> None:
    with pytest.raises(ValueError, match="CLOCK_OFFSET"):
        Settings(
            environment="production",
            jwt_keys={"k1": "production-key-0123456789abcdef0123"},
            jwt_active_kid="k1",
            database_url="postgresql://db/coalition",
            redis_url="redis://redis:6379/0",
            customer_id_key="production-customer-key-0123456789",
            sms_gateway="disabled",
            clock_offset_seconds=60,
        )


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_only_allow_listed_algorithms(algorithm: str) -> None:
    claims = jwt.decode(_token(datetime.now(UTC)), options={"verify_signature": False})
    forged = jwt.encode(claims, SETTINGS.jwt_keys["k1"], algorithm=algorithm, headers={"kid": "k1"})
    with pytest.raises(InvalidToken):
        decode_access_token(SETTINGS, forged)


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_garbage_is_always_invalid_never_a_crash(garbage: str) -> None:
    with pytest.raises((InvalidToken, TokenExpired)):
        decode_access_token(SETTINGS, garbage)
