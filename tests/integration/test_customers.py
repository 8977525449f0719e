"""Customers through the HTTP API: sign-in with a texted code, carrier identity tokens, the
carrier's subscriber records, and who may see them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Customer, CustomerOtp
from coalition.campaigns.services.customer_tokens import external_id_hash
from coalition.platform.app import create_app
from coalition.platform.audit import AuditEntry
from coalition.platform.db import utcnow
from coalition.platform.settings import DEV_CUSTOMER_ID_KEY, Settings
from coalition.platform.sms import OUTBOX
from tests.integration.conftest import World, auth_headers

Client = AsyncTestClient[Litestar]

ISSUER = "https://id.carrier.test"
AUDIENCE = "coalition"
PHONE = "+8613812345678"


@dataclass(frozen=True)
class CarrierIdp:
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    jwks: str

    def token(
        self,
        claims: dict[str, Any],
        *,
        algorithm: str = "RS256",
        kid: str | None = "rsa-1",
        expires_in: int = 300,
    ) -> str:
        now = int(datetime.now(UTC).timestamp())
        body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + expires_in, **claims}
        key: Any = self.rsa_key if algorithm == "RS256" else self.ec_key
        headers = {"kid": kid} if kid else {}
        return jwt.encode(body, key, algorithm=algorithm, headers=headers)

    def public_pem(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture(scope="module")
def idp() -> CarrierIdp:
    """The carrier's identity service: an RSA and an EC signing key, public halves as a JWKS."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    jwks = {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
            {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
        ]
    }
    return CarrierIdp(rsa_key=rsa_key, ec_key=ec_key, jwks=json.dumps(jwks))


@pytest.fixture(scope="module")
def app(settings: Settings, idp: CarrierIdp) -> Litestar:
    """The app with the carrier's identity service configured (the rest as in every test)."""
    return create_app(
        settings.model_copy(
            update={
                "carrier_idp_jwks": idp.jwks,
                "carrier_idp_issuer": ISSUER,
                "carrier_idp_audience": AUDIENCE,
            }
        )
    )


@pytest.fixture(autouse=True)
def empty_outbox() -> Iterator[None]:
    OUTBOX.clear()
    yield
    OUTBOX.clear()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def request_code(client: Client, phone: str = PHONE) -> str:
    response = await client.post("/api/v1/customers/otp", json={"phone": phone})
    assert response.status_code == 202, response.text
    message = OUTBOX.messages_to(phone)[-1].message
    found = re.search(r"\b([0-9]{6})\b", message)
    assert found, message
    return found.group(1)


async def sign_in(client: Client, phone: str = PHONE) -> dict[str, Any]:
    code = await request_code(client, phone)
    response = await client.post("/api/v1/customers/token", json={"phone": phone, "code": code})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- one-time codes ----------------------------------------------------------------------------


async def test_sign_in_with_a_texted_code(client: Client, session: AsyncSession) -> None:
    response = await client.post("/api/v1/customers/otp", json={"phone": "138 1234 5678"})
    assert response.status_code == 202
    assert response.json() == {"expires_in": 300}
    [sms] = OUTBOX.messages_to(PHONE)
    assert sms.to == "*******5678"
    assert re.fullmatch(r"Your Coalition code is [0-9]{6}\. .*", sms.message)
    code = re.findall(r"[0-9]{6}", sms.message)[0]

    token = await client.post(
        "/api/v1/customers/token", json={"phone": "+86 138-1234-5678", "code": code}
    )
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "coalition-customer" and claims["kind"] == "customer"
    assert claims["sub"] == body["customer_id"]
    assert jwt.get_unverified_header(body["access_token"])["kid"] == "test-2"

    me = await client.get("/api/v1/customers/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "id": body["customer_id"],
        "phone_hint": "*******5678",
        "tier": 1,
        "tags": [],
        "on_network": False,  # a text proves the number, not a subscription
    }

    customer = (await session.execute(select(Customer))).scalar_one()
    assert customer.external_id_hash == external_id_hash(DEV_CUSTOMER_ID_KEY, PHONE)
    otp = (await session.execute(select(CustomerOtp))).scalar_one()
    assert otp.used_at is not None and otp.attempts == 1
    assert otp.code_hash not in (code, hashlib.sha256(code.encode()).hexdigest())
    stored = repr(customer.model_dump()) + repr(otp.model_dump())
    assert "13812345678" not in stored


async def test_the_same_number_signs_in_as_the_same_customer(client: Client) -> None:
    first = await sign_in(client)
    second = await sign_in(client, "13812345678")
    assert first["customer_id"] == second["customer_id"]


async def test_known_and_unknown_numbers_get_the_same_answer(client: Client) -> None:
    await sign_in(client)
    known = await client.post("/api/v1/customers/otp", json={"phone": PHONE})
    unknown = await client.post("/api/v1/customers/otp", json={"phone": "+8613900000001"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()


async def test_wrong_codes_are_refused_until_the_code_is_exhausted(
    client: Client, session: AsyncSession
) -> None:
    code = await request_code(client)
    for _ in range(5):
        wrong = await client.post(
            "/api/v1/customers/token", json={"phone": PHONE, "code": other_code(code)}
        )
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "otp_invalid"
    right_too_late = await client.post(
        "/api/v1/customers/token", json={"phone": PHONE, "code": code}
    )
    assert right_too_late.status_code == 401
    assert right_too_late.json()["code"] == "otp_invalid"
    otp = (await session.execute(select(CustomerOtp))).scalar_one()
    assert otp.attempts == 5 and otp.used_at is None
    # A new code works again.
    await sign_in(client)


async def test_a_code_is_used_once(client: Client) -> None:
    code = await request_code(client)
    first = await client.post("/api/v1/customers/token", json={"phone": PHONE, "code": code})
    assert first.status_code == 200
    again = await client.post("/api/v1/customers/token", json={"phone": PHONE, "code": code})
    assert again.status_code == 401
    assert again.json()["code"] == "otp_invalid"


async def test_only_the_newest_code_counts(client: Client) -> None:
    older = await request_code(client)
    newer = await request_code(client)
    if older != newer:
        stale = await client.post("/api/v1/customers/token", json={"phone": PHONE, "code": older})
        assert stale.status_code == 401
    fresh = await client.post("/api/v1/customers/token", json={"phone": PHONE, "code": newer})
    assert fresh.status_code == 200


async def test_an_expired_code_is_refused(client: Client, session: AsyncSession) -> None:
    code = await request_code(client)
    await session.execute(update(CustomerOtp).values(expires_at=utcnow() - timedelta(seconds=1)))
    await session.commit()
    expired = await client.post("/api/v1/customers/token", json={"phone": PHONE, "code": code})
    assert expired.status_code == 401
    assert expired.json()["code"] == "otp_expired"


async def test_code_requests_are_rate_limited_per_number(client: Client) -> None:
    statuses = [
        (await client.post("/api/v1/customers/otp", json={"phone": PHONE})).status_code
        for _ in range(5)
    ]
    assert statuses == [202] * 5
    limited = await client.post("/api/v1/customers/otp", json={"phone": "138 1234 5678"})
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) > 0
    assert len(OUTBOX.messages_to(PHONE)) == 5
    # Another number from the same client is still served.
    other = await client.post("/api/v1/customers/otp", json={"phone": "+8613900000002"})
    assert other.status_code == 202


async def test_code_requests_are_rate_limited_per_client(client: Client) -> None:
    statuses = [
        (
            await client.post("/api/v1/customers/otp", json={"phone": f"+86139000{n:05d}"})
        ).status_code
        for n in range(51)
    ]
    assert statuses[:50] == [202] * 50
    assert statuses[50] == 429


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/customers/otp", {"phone": "call me maybe"}),
        ("/api/v1/customers/otp", {"phone": "+86 10 1234 5678"}),
        ("/api/v1/customers/token", {"phone": "12345", "code": "123456"}),
    ],
)
async def test_garbage_numbers_are_422_naming_the_phone(
    client: Client, path: str, body: dict[str, str]
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["field"] == "phone"
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_malformed_code_is_422(client: Client) -> None:
    response = await client.post("/api/v1/customers/token", json={"phone": PHONE, "code": "12ab"})
    assert response.status_code == 422
    assert response.json()["field"] == "code"


# --- customer tokens and staff endpoints -------------------------------------------------------


async def test_customer_tokens_cannot_call_staff_endpoints(client: Client, world: World) -> None:
    token = (await sign_in(client))["access_token"]
    organizations = await client.get("/api/v1/organizations", headers=bearer(token))
    assert organizations.status_code == 403
    me = await client.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 403
    customer_id = (await sign_in(client))["customer_id"]
    record = await client.get(f"/api/v1/customers/{customer_id}", headers=bearer(token))
    assert record.status_code == 403
    upsert = await client.put(
        "/api/v1/customers",
        json={"customers": [{"phone": PHONE, "tier": 7}]},
        headers=bearer(token),
    )
    assert upsert.status_code == 403


async def test_staff_tokens_cannot_act_as_customers(client: Client, world: World) -> None:
    headers = await auth_headers(client, "admin@carrier.test")
    response = await client.get("/api/v1/customers/me", headers=headers)
    assert response.status_code == 403


async def test_bad_customer_tokens_are_refused(
    client: Client, session: AsyncSession, settings: Settings
) -> None:
    body = await sign_in(client)
    head, payload, signature = body["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "00000000-0000-0000-0000-000000000001"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = await client.get(
        "/api/v1/customers/me", headers=bearer(f"{head}.{forged_payload}.{signature}")
    )
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_token"

    now = datetime.now(UTC) - timedelta(hours=2)
    stale = jwt.encode(
        {**claims, "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 3600},
        settings.jwt_keys["test-2"],
        algorithm="HS256",
        headers={"kid": "test-2"},
    )
    expired = await client.get("/api/v1/customers/me", headers=bearer(stale))
    assert expired.status_code == 401 and expired.json()["code"] == "token_expired"

    # Customers are never deleted, so a valid token is not looked up on every request; were
    # the record gone anyway, reading it answers 404.
    await session.execute(delete(Customer))
    await session.commit()
    gone = await client.get("/api/v1/customers/me", headers=bearer(body["access_token"]))
    assert gone.status_code == 404


# --- carrier identity tokens -------------------------------------------------------------------


async def test_carrier_identity_token_signs_in_and_updates_the_record(
    client: Client, idp: CarrierIdp, session: AsyncSession
) -> None:
    token = idp.token(
        {"sub": "sub-1", "phone_number": PHONE, "tier": 5, "tags": ["gold", "5g"]},
    )
    me = await client.get("/api/v1/customers/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json() | {"id": None} == {
        "id": None,
        "phone_hint": "*******5678",
        "tier": 5,
        "tags": ["gold", "5g"],
        "on_network": True,
    }
    customer_id = me.json()["id"]

    changed = idp.token({"sub": "sub-1", "phone_number": PHONE, "tier": 6, "on_network": False})
    again = await client.get("/api/v1/customers/me", headers=bearer(changed))
    assert again.json() == {
        "id": customer_id,
        "phone_hint": "*******5678",
        "tier": 6,
        "tags": ["gold", "5g"],  # not stated: kept
        "on_network": False,
    }
    # The same subscriber signing in with a texted code is the same customer.
    assert (await sign_in(client))["customer_id"] == customer_id
    assert len((await session.execute(select(Customer))).scalars().all()) == 1


async def test_carrier_identity_token_with_es256_and_only_a_subject(
    client: Client, idp: CarrierIdp
) -> None:
    token = idp.token({"sub": "subscriber-77", "tier": 3}, algorithm="ES256", kid="ec-1")
    me = await client.get("/api/v1/customers/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["phone_hint"] is None and me.json()["tier"] == 3
    again = await client.get(
        "/api/v1/customers/me",
        headers=bearer(idp.token({"sub": "subscriber-77"}, algorithm="ES256", kid="ec-1")),
    )
    assert again.json()["id"] == me.json()["id"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handmade(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _valid_claims() -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "s-1", "iat": now, "exp": now + 300}


def _bad_tokens(idp: CarrierIdp) -> dict[str, tuple[str, str]]:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = _valid_claims()
    return {
        "wrong issuer": (idp.token({"sub": "s", "iss": "https://evil.test"}), "invalid_token"),
        "wrong audience": (idp.token({"sub": "s", "aud": "someone-else"}), "invalid_token"),
        "expired": (idp.token({"sub": "s"}, expires_in=-3600), "token_expired"),
        "no kid": (idp.token({"sub": "s"}, kid=None), "invalid_token"),
        "unknown kid": (idp.token({"sub": "s"}, kid="rsa-9"), "invalid_token"),
        "HS256 signed with the public key": (
            _handmade({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims, idp.public_pem()),
            "invalid_token",
        ),
        "alg none": (
            _handmade({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims, None),
            "invalid_token",
        ),
        "signed by another key": (
            jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "rsa-1"}),
            "invalid_token",
        ),
        "no expiry": (
            jwt.encode(
                {k: v for k, v in claims.items() if k != "exp"},
                idp.rsa_key,
                algorithm="RS256",
                headers={"kid": "rsa-1"},
            ),
            "invalid_token",
        ),
        "no subscriber": (
            jwt.encode(
                {k: v for k, v in claims.items() if k != "sub"},
                idp.rsa_key,
                algorithm="RS256",
                headers={"kid": "rsa-1"},
            ),
            "invalid_token",
        ),
        "RS384": (
            jwt.encode(claims, idp.rsa_key, algorithm="RS384", headers={"kid": "rsa-1"}),
            "invalid_token",
        ),
    }


async def test_bad_carrier_identity_tokens_are_refused(
    client: Client, idp: CarrierIdp, session: AsyncSession
) -> None:
    for name, (token, code) in _bad_tokens(idp).items():
        response = await client.get("/api/v1/customers/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.json()["code"] == code, name
    assert (await session.execute(select(Customer))).first() is None


# --- the carrier's subscriber records ----------------------------------------------------------


async def test_carrier_loads_segments_and_reads_them(
    client: Client, world: World, session: AsyncSession
) -> None:
    marketing = await auth_headers(client, "marketing@carrier.test")
    first = await client.put(
        "/api/v1/customers",
        json={
            "customers": [
                {"phone": "13800000001", "tier": 7, "tags": ["gold", "5g"]},
                {"phone": "+86 138 0000 0002", "tier": 2, "on_network": False},
                {"phone": "+14155552671", "tier": 1},
            ]
        },
        headers=marketing,
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["updated"]) == (3, 0)
    assert [item["phone_hint"] for item in body["items"]] == [
        "*******0001",
        "*******0002",
        "*******2671",
    ]
    assert all(item["created"] for item in body["items"])

    second = await client.put(
        "/api/v1/customers",
        json={
            "customers": [
                {"phone": "+8613800000004", "tier": 4},
                {"phone": "+8613800000001", "tier": 6, "tags": ["platinum"]},
            ]
        },
        headers=marketing,
    )
    assert (second.json()["created"], second.json()["updated"]) == (1, 1)
    updated = second.json()["items"][1]
    assert updated["id"] == body["items"][0]["id"] and updated["created"] is False

    admin = await auth_headers(client, "admin@carrier.test")
    record = await client.get(f"/api/v1/customers/{updated['id']}", headers=admin)
    assert record.status_code == 200
    assert record.json()["tier"] == 6 and record.json()["tags"] == ["platinum"]
    assert "external_id_hash" not in record.json()
    finance = await auth_headers(client, "finance@carrier.test")
    assert (
        await client.get(f"/api/v1/customers/{updated['id']}", headers=finance)
    ).status_code == 200

    # The subscriber signing in with a texted code keeps the carrier's view of them.
    customer = await sign_in(client, "13800000001")
    assert customer["customer_id"] == updated["id"]
    me = await client.get("/api/v1/customers/me", headers=bearer(customer["access_token"]))
    assert me.json()["tier"] == 6 and me.json()["on_network"] is True

    entries = (
        await session.execute(
            select(AuditEntry).where(col(AuditEntry.action) == "customers.upserted")
        )
    ).scalars()
    assert sorted(e.after["created"] for e in entries if e.after) == [1, 3]


async def test_only_the_carrier_sees_customer_records(client: Client, world: World) -> None:
    customer_id = (await sign_in(client))["customer_id"]
    for email in ("admin@cafe.test", "finance@bank.test", "cashier@carrier.test"):
        response = await client.get(
            f"/api/v1/customers/{customer_id}", headers=await auth_headers(client, email)
        )
        assert response.status_code == 404, email
    missing = await client.get(
        "/api/v1/customers/00000000-0000-0000-0000-000000000001",
        headers=await auth_headers(client, "admin@carrier.test"),
    )
    assert missing.status_code == 404


@pytest.mark.parametrize("email", ["admin@cafe.test", "finance@carrier.test"])
async def test_only_carrier_admins_and_marketing_load_subscribers(
    client: Client, world: World, email: str
) -> None:
    response = await client.put(
        "/api/v1/customers",
        json={"customers": [{"phone": PHONE, "tier": 3}]},
        headers=await auth_headers(client, email),
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("customers", "field"),
    [
        ([{"phone": PHONE, "tier": 1}, {"phone": "13812345678", "tier": 2}], "customers[1].phone"),
        ([{"phone": PHONE, "tier": 1}, {"phone": "nope", "tier": 2}], "customers[1].phone"),
        ([{"phone": PHONE, "tier": 8}], "customers[0].tier"),
        ([{"phone": PHONE, "tier": 1, "tags": ["two words"]}], "customers[0].tags[0]"),
        ([{"phone": PHONE, "tier": 1, "msisdn": "x"}], "customers[0].msisdn"),
        ([], "customers"),
        ([{"phone": f"+86138{n:08d}", "tier": 1} for n in range(1001)], "customers"),
    ],
)
async def test_bad_uploads_are_422_naming_the_row(
    client: Client, world: World, session: AsyncSession, customers: list[Any], field: str
) -> None:
    response = await client.put(
        "/api/v1/customers",
        json={"customers": customers},
        headers=await auth_headers(client, "admin@carrier.test"),
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.text
    assert (await session.execute(select(Customer))).first() is None


async def test_a_full_upload_of_1000_subscribers(
    client: Client, world: World, session: AsyncSession
) -> None:
    response = await client.put(
        "/api/v1/customers",
        json={"customers": [{"phone": f"+86138{n:08d}", "tier": 1 + n % 7} for n in range(1000)]},
        headers=await auth_headers(client, "marketing@carrier.test"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1000
    items = response.json()["items"]
    assert [i["phone_hint"] for i in items[:2]] == ["*******0000", "*******0001"]
    assert len((await session.execute(select(Customer))).scalars().all()) == 1000
