"""Terminal keys verified recently answer without a database lookup, for a bounded time.

A change made through this process (revocation, rotation, suspension, archiving) is seen at
once; a change made elsewhere (another server process, here: straight in the database) within
`TERMINAL_KEY_CACHE_SECONDS`, never later.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from coalition.merchants.models import Organization, Terminal, TerminalKey
from coalition.merchants.services import identity, terminals
from coalition.merchants.services.identity import TERMINAL_KEY_CACHE_SECONDS
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.settings import Settings
from tests.integration.campaign_helpers import running_campaign
from tests.integration.conftest import World, auth_headers
from tests.integration.test_pos_redemption import add_terminals, claim, quote, redeem

Client = AsyncTestClient[Litestar]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock() -> Iterator[Clock]:
    """A fresh cache on a clock the test moves."""
    keys = identity.verified_terminal_keys
    saved = (keys.clock, keys.ttl_seconds)
    fake = Clock()
    keys.clock, keys.ttl_seconds = fake, TERMINAL_KEY_CACHE_SECONDS
    keys.forget_all()
    yield fake
    keys.clock, keys.ttl_seconds = saved
    keys.forget_all()


async def test_a_terminal_changed_elsewhere_is_refused_within_the_bound(
    client: Client, world: World, session: AsyncSession, settings: Settings, clock: Clock
) -> None:
    campaign = await running_campaign(session, world)
    [(terminal, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    assert (await quote(client, till, code)).status_code == 200
    assert len(identity.verified_terminal_keys) == 1

    # Another server process revokes the terminal: this one does not hear of it.
    await session.execute(
        update(Terminal).where(col(Terminal.id) == terminal.id).values(status="revoked")
    )
    await session.commit()
    clock.now += TERMINAL_KEY_CACHE_SECONDS - 0.5
    assert (await quote(client, till, code)).status_code == 200  # still inside the bound
    clock.now += 0.5
    refused = await quote(client, till, code)
    assert refused.status_code == 401, refused.text
    assert (await redeem(client, till, code)).status_code == 401
    assert len(identity.verified_terminal_keys) == 0


async def test_an_organization_suspended_elsewhere_is_refused_within_the_bound(
    client: Client, world: World, session: AsyncSession, settings: Settings, clock: Clock
) -> None:
    campaign = await running_campaign(session, world)
    [(_, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    assert (await quote(client, till, code)).status_code == 200
    await session.execute(
        update(Organization).where(col(Organization.id) == world.cafe.id).values(status="suspended")
    )
    await session.commit()
    clock.now += TERMINAL_KEY_CACHE_SECONDS
    refused = await redeem(client, till, code)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "organization_inactive"


async def test_revocation_and_suspension_here_take_effect_at_once(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world)
    [(revoked, revoked_till), (_, till)] = await add_terminals(session, world.cafe, count=2)
    code = await claim(client, settings, session, campaign)
    assert (await quote(client, revoked_till, code)).status_code == 200
    assert (await quote(client, till, code)).status_code == 200

    locked = await session.get_one(Terminal, revoked.id, with_for_update=True)
    await terminals.revoke_terminal(session, None, locked)
    await session.commit()
    # No time passes on the cache's clock.
    assert (await redeem(client, revoked_till, code)).status_code == 401
    assert (await quote(client, till, code)).status_code == 200

    suspended = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/suspend",
        json={"reason": "unpaid fees"},
        headers=await auth_headers(client, "admin@carrier.test"),
    )
    assert suspended.status_code == 200, suspended.text
    refused = await redeem(client, till, code)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "organization_inactive"


async def test_a_key_expiring_sooner_than_the_bound_is_trusted_only_until_it_expires(
    client: Client, world: World, session: AsyncSession, settings: Settings, clock: Clock
) -> None:
    campaign = await running_campaign(session, world)
    [(terminal, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    await session.execute(
        update(TerminalKey)
        .where(col(TerminalKey.terminal_id) == terminal.id)
        .values(expires_at=utcnow() + timedelta(seconds=2))
    )
    await session.commit()
    assert (await quote(client, till, code)).status_code == 200
    credential = till["Authorization"].split(" ", 1)[1]
    assert identity.verified_terminal_keys.get(credential) is not None
    clock.now += 2.0
    # The entry ended with the key's expiry, well inside the general bound.
    assert identity.verified_terminal_keys.get(credential) is None


def test_the_cache_keeps_at_most_its_capacity_oldest_first() -> None:
    keys = identity.VerifiedTerminalKeys(capacity=2, clock=Clock())
    principals = [
        Principal(kind="terminal", org_id=uuid.uuid4(), org_kind="merchant") for _ in range(3)
    ]
    for n, principal in enumerate(principals):
        keys.remember(f"ctk_{n:016x}_secret", principal, key_expires_at=None)
    assert len(keys) == 2
    assert keys.get("ctk_0000000000000000_secret") is None
    assert keys.get("ctk_0000000000000002_secret") == principals[2]
    assert keys.get("ctk_unknown") is None


def test_an_unverified_terminal_key_is_never_answered_without_a_lookup(
    settings: Settings,
) -> None:
    assert identity.principal_without_lookup(settings, "ctk_0123456789abcdef_" + "x" * 30) is None
