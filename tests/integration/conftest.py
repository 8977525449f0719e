"""Per-test isolation (empty tables, empty Redis), the app over real servers, and a small world."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from coalition.merchants.models import Organization, User
from coalition.merchants.services import organizations, staff
from coalition.platform.app import create_app
from coalition.platform.db import SessionMaker, make_engine, make_sessionmaker
from coalition.platform.migrate import all_metadata
from coalition.platform.security import hash_password
from coalition.platform.settings import Settings
from tests.conftest import Servers
from tests.integration.stripe_helpers import (
    gateway,
    signed_webhooks,
    simulator,
    stripe_server,
    webhook_receiver,
    webhook_server,
)

# The Stripe simulator's fixtures, defined with its helpers, offered to every test here.
__all__ = [
    "gateway",
    "signed_webhooks",
    "simulator",
    "stripe_server",
    "webhook_receiver",
    "webhook_server",
]

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def settings(servers: Servers) -> Settings:
    return Settings(
        environment="test",
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        jwt_keys={
            "test-2": "second-test-signing-key-0123456789abcdef",
            "test-1": "first-test-signing-key-0123456789abcdef",
        },
        jwt_active_kid="test-2",
        login_attempts_per_window=5,
        # Storm tests fire 50 calls from one terminal at once; the limit has its own tests.
        pos_rate_limit_burst=1000,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return make_sessionmaker(engine)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url or "")
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def clean_state(engine: AsyncEngine, settings: Settings) -> AsyncIterator[None]:
    """Every test starts with empty tables and an empty Redis database."""
    tables = ", ".join(f'"{t.name}"' for t in all_metadata().sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    client = Redis.from_url(settings.redis_url or "")
    await client.flushdb()
    await client.aclose()
    yield


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as test_client:
        yield test_client


@pytest.fixture
async def session(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as db_session:
        yield db_session


@dataclass
class World:
    carrier: Organization
    cafe: Organization
    bank: Organization
    users: dict[str, User]


@pytest.fixture
async def world(session: AsyncSession) -> World:
    """A carrier, a café and a bank, each with staff in every role (all with PASSWORD)."""
    orgs: dict[str, Organization] = {}
    users: dict[str, User] = {}
    password_hash = hash_password(PASSWORD)  # hashed once: argon2id is slow on purpose
    for key, kind, industry in (
        ("carrier", "carrier", "telecom"),
        ("cafe", "merchant", "cafe"),
        ("bank", "merchant", "bank"),
    ):
        orgs[key] = await organizations.create_organization(
            session, kind=kind, name=f"{key.title()} Org", industry=industry
        )
        for role in ("admin", "marketing", "finance", "cashier"):
            user = await staff.create_user(
                session,
                org=orgs[key],
                email=f"{role}@{key}.test",
                display_name=f"{key} {role}",
                role=role,
                password=None,
            )
            user.password_hash, user.status = password_hash, "active"
            users[f"{key}_{role}"] = user
    await session.commit()
    return World(carrier=orgs["carrier"], cafe=orgs["cafe"], bank=orgs["bank"], users=users)


async def login(
    client: AsyncTestClient[Litestar], email: str, password: str = PASSWORD
) -> dict[str, str]:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def auth_headers(client: AsyncTestClient[Litestar], email: str) -> dict[str, str]:
    tokens = await login(client, email)
    return {"Authorization": f"Bearer {tokens['access_token']}"}
