"""Login, token rotation and reuse detection, and every way an access token can be bad."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.models import RefreshToken, User
from coalition.platform.security import issue_access_token
from coalition.platform.settings import Settings
from tests.integration.conftest import PASSWORD, World, auth_headers, login

Client = AsyncTestClient[Litestar]


async def test_login_returns_tokens_and_me_answers(client: Client, world: World) -> None:
    tokens = await login(client, "admin@cafe.test")
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    assert tokens["refresh_token"].startswith("crt_")

    me = await client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    body = me.json()
    assert body["user"]["email"] == "admin@cafe.test"
    assert body["user"]["role"] == "admin"
    assert body["organization"]["id"] == str(world.cafe.id)
    assert "password_hash" not in body["user"]


async def test_access_token_carries_standard_claims(
    client: Client, world: World, settings: Settings
) -> None:
    token = (await login(client, "finance@bank.test"))["access_token"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "kid": "test-2", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == settings.jwt_issuer and claims["aud"] == settings.jwt_audience
    assert claims["exp"] - claims["iat"] == 900
    assert claims["sub"] == str(world.users["bank_finance"].id)


async def test_unknown_user_and_wrong_password_get_the_same_error(
    client: Client, world: World
) -> None:
    wrong_password = await client.post(
        "/api/v1/auth/login", json={"email": "admin@cafe.test", "password": "nope"}
    )
    unknown_user = await client.post(
        "/api/v1/auth/login", json={"email": "ghost@cafe.test", "password": "nope"}
    )
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.headers["content-type"] == "application/problem+json"
    strip = lambda r: {k: v for k, v in r.json().items() if k != "request_id"}  # noqa: E731
    assert strip(wrong_password) == strip(unknown_user)
    assert wrong_password.json()["code"] == "invalid_credentials"


async def test_login_is_case_insensitive_on_email(client: Client, world: World) -> None:
    tokens = await login(client, "Admin@Cafe.TEST")
    assert tokens["access_token"]


async def test_login_is_rate_limited(client: Client, world: World) -> None:
    statuses = []
    for _ in range(7):
        response = await client.post(
            "/api/v1/auth/login", json={"email": "admin@bank.test", "password": "guess"}
        )
        statuses.append(response.status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) > 0
    # even the right password is refused while the window lasts
    locked = await client.post(
        "/api/v1/auth/login", json={"email": "admin@bank.test", "password": PASSWORD}
    )
    assert locked.status_code == 429


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: Client, world: World, session: AsyncSession
) -> None:
    first = await login(client, "marketing@carrier.test")
    rotated = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = await client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {second['access_token']}"}
    )
    assert me.status_code == 200

    # the spent token comes back (stolen?): refused, and the whole family is revoked
    reuse = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 401
    assert reuse.json()["code"] == "invalid_token"
    after = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert after.status_code == 401

    tokens = (await session.execute(select(RefreshToken))).scalars().all()
    assert len(tokens) == 2
    assert all(t.revoked_at is not None for t in tokens)
    assert len({t.family_id for t in tokens}) == 1


async def test_unknown_refresh_token_is_401(client: Client, world: World) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "crt_" + "x" * 40})
    assert response.status_code == 401


async def test_logout_revokes_the_refresh_token(client: Client, world: World) -> None:
    tokens = await login(client, "admin@cafe.test")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    out = await client.post(
        "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=headers
    )
    assert out.status_code == 204
    again = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert again.status_code == 401


async def test_cannot_log_out_someone_elses_session(client: Client, world: World) -> None:
    victim = await login(client, "admin@bank.test")
    attacker = await auth_headers(client, "admin@cafe.test")
    response = await client.post(
        "/api/v1/auth/logout", json={"refresh_token": victim["refresh_token"]}, headers=attacker
    )
    assert response.status_code == 401
    still = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}
    )
    assert still.status_code == 200


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _assert_401(client: Client, token: str, code: str = "invalid_token") -> None:
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_missing_bearer_is_401(client: Client) -> None:
    response = await client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_expired_token_is_401(client: Client, world: World, settings: Settings) -> None:
    user = world.users["cafe_admin"]
    token, _ = issue_access_token(
        settings,
        user_id=user.id,
        org_id=user.org_id,
        role=user.role,
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    await _assert_401(client, token, code="token_expired")


async def test_tampered_token_is_401(client: Client, world: World) -> None:
    token = (await login(client, "cashier@cafe.test"))["access_token"]
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    await _assert_401(client, f"{header}.{_b64(claims)}.{signature}")


async def test_alg_none_token_is_401(client: Client, world: World) -> None:
    token = (await login(client, "cashier@cafe.test"))["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': 'test-2'})}.{_b64(claims)}."
    await _assert_401(client, unsigned)


async def test_wrong_audience_and_issuer_are_401(
    client: Client, world: World, settings: Settings
) -> None:
    user = world.users["cafe_admin"]
    now = datetime.now(UTC)
    base = {
        "sub": str(user.id),
        "org": str(user.org_id),
        "role": "admin",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": "x",
    }
    key = settings.jwt_keys["test-2"]
    for claims in (
        {**base, "iss": settings.jwt_issuer, "aud": "another-api"},
        {**base, "iss": "someone-else", "aud": settings.jwt_audience},
    ):
        token = jwt.encode(claims, key, algorithm="HS256", headers={"kid": "test-2"})
        await _assert_401(client, token)


async def test_unknown_key_id_is_401_and_old_key_still_verifies(
    client: Client, world: World, settings: Settings
) -> None:
    user = world.users["cafe_admin"]
    now = datetime.now(UTC)
    claims = {
        "sub": str(user.id),
        "org": str(user.org_id),
        "role": "admin",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": "y",
    }
    unknown = jwt.encode(
        claims, "a-key-nobody-has-0123456789abcdef", algorithm="HS256", headers={"kid": "zzz"}
    )
    await _assert_401(client, unknown)
    # a token signed with the previous (still listed) key keeps working during rotation
    previous = jwt.encode(
        claims, settings.jwt_keys["test-1"], algorithm="HS256", headers={"kid": "test-1"}
    )
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {previous}"})
    assert response.status_code == 200


async def test_deactivated_user_token_stops_working_at_once(
    client: Client, world: World, session: AsyncSession
) -> None:
    headers = await auth_headers(client, "cashier@bank.test")
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    user = await session.get_one(User, world.users["bank_cashier"].id)
    user.status = "deactivated"
    await session.commit()
    response = await client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
