"""Customers without I/O: phone numbers, keyed external ids, customer and carrier tokens, the
console SMS gateway."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from coalition.campaigns.services import customer_tokens
from coalition.campaigns.services.customer_tokens import (
    CUSTOMER_ORG_ID,
    CarrierClaims,
    VerifiedCustomerTokens,
    customer_config,
    customer_principal,
    customer_principal_without_lookup,
    decode_customer_token,
    external_id_hash,
    idp_subject_identity,
    issue_customer_token,
    token_kind,
    verify_carrier_token,
)
from coalition.campaigns.services.customers import otp_code_hash
from coalition.platform.errors import InvalidToken, TokenExpired, ValidationFailed
from coalition.platform.security import decode_access_token, issue_access_token
from coalition.platform.settings import Settings
from coalition.platform.sms import (
    ConsoleSmsGateway,
    DisabledSmsGateway,
    SmsOutbox,
    SmsUnavailable,
    mask_phone,
    normalize_phone,
    sms_gateway,
)

ISSUER = "https://id.carrier.test"
AUDIENCE = "coalition"
KEY = "unit-test-customer-id-key-0123456789abcdef"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
FULL_WIDTH = {ord(d): ord(d) + 0xFEE0 for d in "0123456789+"}


def _jwks() -> str:
    rsa_jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
    ec_jwk: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)
    return json.dumps(
        {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }
    )


BASE = Settings(
    environment="test",
    jwt_keys={
        "k1": "unit-test-key-0123456789abcdef0123",
        "k0": "old-unit-test-key-0123456789abcdef",
    },
    jwt_active_kid="k1",
)
SETTINGS = BASE.model_copy(
    update={
        "customer_id_key": KEY,
        "carrier_idp_jwks": _jwks(),
        "carrier_idp_issuer": ISSUER,
        "carrier_idp_audience": AUDIENCE,
    }
)


# --- phone numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "008613812345678",
        "8613812345678",
        "(+86) 138.1234.5678",
        "13812345678".translate(FULL_WIDTH),  # as typed with a full-width Chinese keyboard
        " +8613812345678 ",
    ],
)
def test_chinese_mobiles_normalize_to_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+8613812345678"


@pytest.mark.parametrize(
    ("raw", "e164"),
    [("+1 (415) 555-2671", "+14155552671"), ("0044 7911 123456", "+447911123456")],
)
def test_international_numbers_keep_their_country(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw",
    [
        "hello",
        "",
        "12345",
        "23812345678",  # 11 digits that are no Chinese mobile
        "1381234567",  # 10 digits
        "+86 10 1234 5678",  # a Beijing landline: receives no text messages
        "+0123456789",
        "+1234567890123456",  # 16 digits: longer than E.164 allows
        "+86138123456789",
        "13812345678".translate(FULL_WIDTH) + "x",
        "١٣٨١٢٣٤٥٦٧٨",  # Arabic-Indic digits
    ],
)
def test_garbage_is_refused_naming_the_field(raw: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        normalize_phone(raw, field="customers[3].phone")
    assert caught.value.field == "customers[3].phone"
    assert caught.value.status_code == 422


def test_a_mask_keeps_only_the_last_four_digits() -> None:
    assert mask_phone("+8613812345678") == "*******5678"
    assert "1381234" not in mask_phone("+8613812345678")


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_every_chinese_mobile_normalizes_idempotently(national: str) -> None:
    e164 = normalize_phone(national)
    assert e164 == "+86" + national
    assert normalize_phone(e164) == e164


# --- external ids -----------------------------------------------------------------------------


def test_external_id_is_a_stable_keyed_hash() -> None:
    first = external_id_hash(KEY, "+8613812345678")
    assert first == external_id_hash(KEY, "+8613812345678")
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert first != external_id_hash("another-key-0123456789abcdef", "+8613812345678")
    assert first != external_id_hash(KEY, "+8613812345679")
    assert "13812345678" not in first


def test_identity_service_subjects_never_collide_with_numbers() -> None:
    identity = idp_subject_identity(ISSUER, "+8613812345678")
    assert not identity.startswith("+")
    assert idp_subject_identity("a:b", "c") != idp_subject_identity("a", "b:c")


def test_the_dev_key_hashes_nothing_in_production() -> None:
    production = BASE.model_copy(update={"environment": "production"})
    with pytest.raises(RuntimeError, match="COALITION_CUSTOMER_ID_KEY"):
        _ = customer_config(production).hash_key
    # Customer tokens still verify: only hashing needs the key.
    token, _ = issue_customer_token(production, customer_id=uuid.uuid4(), now=datetime.now(UTC))
    decode_customer_token(production, token)
    real = production.model_copy(update={"customer_id_key": KEY})
    assert customer_config(real).hash_key == KEY


def test_otp_hash_is_keyed_and_bound_to_its_row() -> None:
    otp_id = uuid.uuid4()
    stored = otp_code_hash(KEY, otp_id, "123456")
    assert stored == otp_code_hash(KEY, otp_id, "123456")
    assert stored != otp_code_hash(KEY, uuid.uuid4(), "123456")
    assert stored != otp_code_hash("another-key-0123456789abcdef", otp_id, "123456")


# --- customer tokens --------------------------------------------------------------------------


def test_customer_token_claims() -> None:
    customer_id = uuid.uuid4()
    now = datetime.now(UTC)
    token, expires_at = issue_customer_token(SETTINGS, customer_id=customer_id, now=now)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "coalition-customer" != SETTINGS.jwt_audience
    assert claims["iss"] == SETTINGS.jwt_issuer
    assert claims["sub"] == str(customer_id)
    assert claims["kind"] == "customer"
    assert claims["exp"] - claims["iat"] == 3600
    assert expires_at == now + timedelta(hours=1)
    decoded = decode_customer_token(SETTINGS, token)
    assert decoded.customer_id == customer_id
    assert token_kind(SETTINGS, token) == "customer"


def test_customer_token_signed_by_a_retired_but_listed_key_still_verifies() -> None:
    old = SETTINGS.model_copy(update={"jwt_active_kid": "k0"})
    token, _ = issue_customer_token(old, customer_id=uuid.uuid4(), now=datetime.now(UTC))
    assert jwt.get_unverified_header(token)["kid"] == "k0"
    decode_customer_token(SETTINGS, token)


def test_expired_customer_token_is_refused() -> None:
    token, _ = issue_customer_token(
        SETTINGS, customer_id=uuid.uuid4(), now=datetime.now(UTC) - timedelta(hours=2)
    )
    with pytest.raises(TokenExpired):
        decode_customer_token(SETTINGS, token)


def test_customer_and_staff_tokens_are_never_each_other() -> None:
    now = datetime.now(UTC)
    customer, _ = issue_customer_token(SETTINGS, customer_id=uuid.uuid4(), now=now)
    staff, _ = issue_access_token(
        SETTINGS, user_id=uuid.uuid4(), org_id=uuid.uuid4(), role="admin", now=now
    )
    with pytest.raises(InvalidToken):
        decode_access_token(SETTINGS, customer)
    with pytest.raises(InvalidToken):
        decode_customer_token(SETTINGS, staff)
    assert token_kind(SETTINGS, staff) is None
    assert token_kind(SETTINGS, "ctk_0123456789abcdef_secret") is None
    assert token_kind(SETTINGS, "not.a.jwt") is None


def test_a_forged_kind_claim_does_not_make_a_customer_token() -> None:
    claims = {
        "iss": SETTINGS.jwt_issuer,
        "aud": "coalition-customer",
        "sub": str(uuid.uuid4()),
        "iat": int(datetime.now(UTC).timestamp()),
        "exp": int(datetime.now(UTC).timestamp()) + 60,
        "jti": "x",
        "kind": "user",
    }
    token = jwt.encode(claims, SETTINGS.jwt_keys["k1"], algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(InvalidToken):
        decode_customer_token(SETTINGS, token)


def test_a_verified_customer_token_is_remembered_but_still_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    customer_id = uuid.uuid4()
    token, expires_at = issue_customer_token(SETTINGS, customer_id=customer_id, now=now)
    verified = VerifiedCustomerTokens(size=2)
    assert verified.claims(SETTINGS, token).customer_id == customer_id
    assert token in verified
    # a hit is not verified again (another key set would refuse it), but its expiry is checked
    rotated = SETTINGS.model_copy(
        update={"jwt_keys": {"k9": "another-unit-test-key-0123456789abc"}, "jwt_active_kid": "k9"}
    )
    with pytest.raises(InvalidToken):
        decode_customer_token(rotated, token)
    assert verified.claims(rotated, token).customer_id == customer_id
    later = expires_at + timedelta(seconds=10)
    monkeypatch.setattr(customer_tokens, "utcnow", lambda: later)
    with pytest.raises(TokenExpired):
        verified.claims(SETTINGS, token)
    assert token not in verified
    monkeypatch.undo()
    # bounded: the oldest entry goes first
    others = [issue_customer_token(SETTINGS, customer_id=uuid.uuid4(), now=now)[0] for _ in "ab"]
    for other in [token, *others]:
        verified.claims(SETTINGS, other)
    assert token not in verified and all(o in verified for o in others)


def test_only_valid_customer_tokens_skip_the_resolvers() -> None:
    now = datetime.now(UTC)
    customer_id = uuid.uuid4()
    customer, _ = issue_customer_token(SETTINGS, customer_id=customer_id, now=now)
    principal = customer_principal_without_lookup(SETTINGS, customer)
    assert principal == customer_principal(customer_id)
    staff, _ = issue_access_token(
        SETTINGS, user_id=uuid.uuid4(), org_id=uuid.uuid4(), role="admin", now=now
    )
    expired, _ = issue_customer_token(
        SETTINGS, customer_id=uuid.uuid4(), now=now - timedelta(hours=2)
    )
    forged = customer[:-4] + ("AAAA" if not customer.endswith("AAAA") else "BBBB")
    for credential in (staff, expired, forged, "ctk_0123456789abcdef_secret", "not.a.jwt"):
        assert customer_principal_without_lookup(SETTINGS, credential) is None


def test_customer_principal_belongs_to_no_organization() -> None:
    principal = customer_principal(uuid.uuid4())
    assert principal.kind == "customer"
    assert principal.org_id == CUSTOMER_ORG_ID == uuid.UUID(int=0)
    assert not principal.is_carrier and not principal.sees_all_tenants
    assert not principal.may_access(uuid.uuid4())


# --- carrier identity tokens ------------------------------------------------------------------


def _carrier_token(claims: dict[str, Any], *, key: Any = RSA_KEY, kid: str = "rsa-1") -> str:
    now = int(datetime.now(UTC).timestamp())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


def test_carrier_token_with_a_phone_number() -> None:
    token = _carrier_token(
        {"sub": "s-1", "phone_number": "+86 138 1234 5678", "tier": 6, "tags": ["gold", "gold"]}
    )
    assert token_kind(SETTINGS, token) == "carrier"
    assert verify_carrier_token(SETTINGS, token) == CarrierClaims(
        external_id_hash=external_id_hash(KEY, "+8613812345678"),
        phone_hint="*******5678",
        tier=6,
        tags=["gold"],
        on_network=None,
    )


def test_carrier_token_with_only_a_subject_or_an_unverified_number() -> None:
    expected = external_id_hash(KEY, idp_subject_identity(ISSUER, "s-42"))
    by_subject = verify_carrier_token(
        SETTINGS, _carrier_token({"sub": "s-42"}, key=EC_KEY, kid="ec-1")
    )
    assert by_subject.external_id_hash == expected and by_subject.phone_hint is None
    unverified = _carrier_token(
        {"sub": "s-42", "phone_number": "+8613812345678", "phone_number_verified": False}
    )
    assert verify_carrier_token(SETTINGS, unverified).external_id_hash == expected


@pytest.mark.parametrize(
    "claims",
    [
        {"tier": 8, "sub": "s"},
        {"tier": True, "sub": "s"},
        {"tags": "gold", "sub": "s"},
        {"tags": ["has space"], "sub": "s"},
        {"on_network": "yes", "sub": "s"},
        {"phone_number": "not a number"},
        {},
    ],
)
def test_carrier_token_with_bad_claims_is_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        verify_carrier_token(SETTINGS, _carrier_token(claims))


def test_carrier_token_key_must_match_its_algorithm() -> None:
    # An RSA-signed token naming the EC key.
    with pytest.raises(InvalidToken):
        verify_carrier_token(SETTINGS, _carrier_token({"sub": "s"}, kid="ec-1"))


def test_carrier_tokens_are_refused_when_no_identity_service_is_configured() -> None:
    token = _carrier_token({"sub": "s"})
    assert token_kind(BASE, token) is None
    with pytest.raises(InvalidToken):
        verify_carrier_token(BASE, token)


# --- the console SMS gateway ------------------------------------------------------------------


async def test_console_gateway_logs_masked_keeps_and_writes_messages(tmp_path: Path) -> None:
    outbox = SmsOutbox(size=2)
    path = tmp_path / "dev" / "sms-outbox.log"
    gateway = ConsoleSmsGateway(outbox=outbox, outbox_file=path)
    with structlog.testing.capture_logs() as logs:
        await gateway.send("+8613812345678", "first")
        await gateway.send("+8613812345678", "second")
        await gateway.send("+14155552671", "third")
    assert [m.message for m in outbox.messages_to("138 1234 5678")] == ["second"]
    assert [m.message for m in outbox.messages_to("+1 415 555 2671")] == ["third"]
    assert len(outbox) == 2
    written = path.read_text(encoding="utf-8")
    assert written.count("\n") == 3 and "to *******5678\tfirst" in written
    everything = written + repr(logs) + repr(list(outbox))
    assert "13812345678" not in everything and "4155552671" not in everything
    assert logs[0]["to"] == "*******5678" and logs[0]["message"] == "first"


async def test_gateway_factory(tmp_path: Path) -> None:
    in_tests = sms_gateway(BASE)
    assert isinstance(in_tests, ConsoleSmsGateway) and in_tests.outbox_file is None
    dev = sms_gateway(BASE.model_copy(update={"environment": "dev", "data_dir": tmp_path}))
    assert isinstance(dev, ConsoleSmsGateway)
    assert dev.outbox_file == tmp_path / "sms-outbox.log"
    production = BASE.model_copy(update={"environment": "production"})
    assert isinstance(sms_gateway(production), DisabledSmsGateway)
    with pytest.raises(RuntimeError):  # it would print one-time codes into production logs
        sms_gateway(production.model_copy(update={"sms_gateway": "console"}))
    disabled = BASE.model_copy(update={"sms_gateway": "disabled"})
    with pytest.raises(SmsUnavailable):
        await sms_gateway(disabled).send("+8613812345678", "hello")
