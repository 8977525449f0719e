"""The `coalition` command line, run as a user would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.models import Campaign
from coalition.merchants.models import Organization, Store, User
from coalition.platform.settings import Settings

COMMANDS = [
    "dev",
    "serve",
    "worker",
    "migrate",
    "seed-demo",
    "create-carrier",
    "issue",
    "stripe-simulator",
]


def coalition(*args: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    if settings is not None:
        env.update(DATABASE_URL=settings.database_url or "", REDIS_URL=settings.redis_url or "")
    return subprocess.run(
        [sys.executable, "-m", "coalition.platform.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = coalition(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"Usage: coalition {command}" in result.stdout


def test_commands_needing_a_database_say_so_clearly() -> None:
    result = coalition("seed-demo")
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


async def test_create_carrier_bootstraps_once(settings: Settings, session: AsyncSession) -> None:
    args = ["create-carrier", "--name", "Carrier X", "--admin-email", "Boss@Carrier.X"]
    first = coalition(*args, "--password", "first-admin-pass", settings=settings)
    assert first.returncode == 0, first.stderr
    assert "created carrier Carrier X" in first.stdout

    again = coalition(*args, "--password", "other", settings=settings)
    assert again.returncode != 0
    assert "already exists" in again.stderr

    carriers = (
        (await session.execute(select(Organization).where(Organization.kind == "carrier")))
        .scalars()
        .all()
    )
    assert [c.name for c in carriers] == ["Carrier X"]
    admin = (await session.execute(select(User))).scalars().one()
    assert (admin.email, admin.role, admin.org_id) == ("boss@carrier.x", "admin", carriers[0].id)


async def test_seed_demo_is_idempotent_and_prints_working_terminal_keys(
    settings: Settings, session: AsyncSession, client: AsyncTestClient[Litestar]
) -> None:
    first = coalition("seed-demo", settings=settings)
    assert first.returncode == 0, first.stderr
    assert "demo data created" in first.stdout and "admin@cafe.demo" in first.stdout
    second = coalition("seed-demo", settings=settings)
    assert "demo data already present" in second.stdout
    orgs = (await session.execute(select(Organization.industry))).scalars().all()
    assert sorted(orgs) == ["bank", "cafe", "education", "telecom"]
    campaigns = (await session.execute(select(Campaign.name, Campaign.status))).all()
    assert sorted(status for _, status in campaigns) == ["active", "active"]
    stores = (await session.execute(select(Store.org_id))).scalars().all()
    assert set(stores) == set((await session.execute(select(Organization.id))).scalars().all())

    old_keys = re.findall(r"ctk_\S+", first.stdout)
    new_keys = re.findall(r"ctk_\S+", second.stdout)
    assert len(new_keys) == 4 and not set(old_keys) & set(new_keys)
    for key in new_keys:
        who = await client.get("/api/v1/pos/terminal", headers={"Authorization": f"Bearer {key}"})
        assert who.status_code == 200, who.text
    stale = await client.get(
        "/api/v1/pos/terminal", headers={"Authorization": f"Bearer {old_keys[0]}"}
    )
    assert stale.status_code == 401


def test_migrate_is_idempotent(settings: Settings) -> None:
    result = coalition("migrate", settings=settings)
    assert result.returncode == 0, result.stderr
    assert "upgrade target: head" in result.stdout
