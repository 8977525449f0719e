"""Bad input gets RFC 9457 problem+json with a stable code and the field at fault."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.models import RefreshToken
from tests.integration.conftest import World

Client = AsyncTestClient[Litestar]
PROBLEM = "application/problem+json"


def assert_problem(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == PROBLEM  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"/problems/{code}"
    assert isinstance(body["title"], str) and body["title"]
    assert body["instance"]
    assert body["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]
    return body


async def test_malformed_json_is_400(client: Client) -> None:
    response = await client.post(
        "/api/v1/auth/login",
        content=b'{"email": "a@b.c", "password": ',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed_body")


async def test_unknown_field_is_rejected_and_named(
    client: Client, world: World, session: AsyncSession
) -> None:
    response = await client.post(
        "/api/v1/auth/login",
        json={"email": "admin@cafe.test", "password": "x", "role": "admin"},
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["field"] == "role"
    assert (await session.execute(select(func.count()).select_from(RefreshToken))).scalar_one() == 0


async def test_missing_and_wrongly_typed_fields_are_named(client: Client) -> None:
    missing = await client.post("/api/v1/auth/login", json={"email": "a@b.c"})
    assert assert_problem(missing, 422, "validation_error")["field"] == "password"
    wrong_type = await client.post("/api/v1/auth/login", json={"email": 42, "password": "x"})
    assert assert_problem(wrong_type, 422, "validation_error")["field"] == "email"
    bad_email = await client.post(
        "/api/v1/auth/login", json={"email": "not-an-email", "password": "x"}
    )
    assert assert_problem(bad_email, 422, "validation_error")["field"] == "email"


async def test_body_size_is_capped(client: Client) -> None:
    huge = b'{"email": "' + b"a" * 2_000_000 + b'@b.c", "password": "x"}'
    response = await client.post(
        "/api/v1/auth/login", content=huge, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "body_too_large")


async def test_unknown_route_and_wrong_method_are_problems(client: Client) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_problem(await client.get("/api/v1/auth/login"), 405, "method_not_allowed")


async def test_bad_path_parameter_is_a_problem(client: Client, world: World) -> None:
    from tests.integration.conftest import auth_headers

    headers = await auth_headers(client, "admin@carrier.test")
    response = await client.get("/api/v1/users/not-a-uuid", headers=headers)
    assert response.status_code in (400, 404)
    assert response.headers["content-type"] == PROBLEM


async def test_request_id_is_echoed_or_made(client: Client) -> None:
    given = await client.get("/health/live", headers={"x-request-id": "pos-42.abc"})
    assert given.headers["x-request-id"] == "pos-42.abc"
    unsafe = await client.get("/health/live", headers={"x-request-id": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"
    assert len(unsafe.headers["x-request-id"]) == 32
