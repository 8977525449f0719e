"""Browser tests: the app served by a real uvicorn on a loopback port against the test database
(seeded with the demo world), driven by Playwright through Debian's chromium. Screenshots of
key pages go to `build/e2e-screenshots/`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from redis import Redis
from sqlalchemy import text

from coalition.platform.db import make_engine, make_sessionmaker
from coalition.platform.demo import DEMO_PASSWORD, seed_demo
from coalition.platform.migrate import all_metadata
from coalition.platform.settings import Settings
from coalition.platform.sms import OUTBOX_FILE
from coalition.settlement.simulator import DEV_API_KEY, SimulatorConfig, SimulatorServer
from tests.conftest import ROOT, Servers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "build" / "e2e-screenshots"


@dataclass(frozen=True)
class PortalServer:
    base: str  # http://127.0.0.1:<port>
    outbox: Path  # where its console SMS gateway writes
    stripe: str  # the Stripe simulator it pays through (key DEV_API_KEY)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _fresh_demo(settings: Settings) -> None:
    engine = make_engine(settings, pool_size=2)
    tables = ", ".join(f'"{t.name}"' for t in all_metadata().sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    async with make_sessionmaker(engine)() as session:
        await seed_demo(session)
    await engine.dispose()


@pytest.fixture(scope="module")
def stripe_simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(api_keys=frozenset({DEV_API_KEY}))) as server:
        yield server


def _environment(
    servers: Servers, stripe: SimulatorServer, base: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "COALITION_ENVIRONMENT": "dev",
        "COALITION_DATA_DIR": str(data_dir),
        "COALITION_PUBLIC_URL": base,
        "COALITION_LOGIN_ATTEMPTS_PER_WINDOW": "1000",
        "COALITION_LOG_LEVEL": "WARNING",
        "COALITION_STRIPE_API_KEY": DEV_API_KEY,
        "COALITION_STRIPE_API_BASE": stripe.url,
        **extra,
    }


@contextmanager
def _uvicorn(env: dict[str, str], port: int, data_dir: Path) -> Iterator[None]:
    """The app on a real uvicorn in its own process, until the block ends."""
    base = f"http://127.0.0.1:{port}"
    log = (data_dir / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "coalition.platform.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            assert server.poll() is None, (data_dir / "server.log").read_text()
            assert time.monotonic() < deadline, "uvicorn did not start"
            try:
                with urllib.request.urlopen(f"{base}/health/live", timeout=2):  # noqa: S310
                    break
            except OSError:
                time.sleep(0.2)
        yield
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def portal_server(
    servers: Servers, stripe_simulator: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PortalServer]:
    """The portal on a real uvicorn in its own process, on a loopback port, against the test
    database. It runs with the console SMS gateway writing to a file in a private data
    directory, where the tests read the one-time codes, and with Stripe simulated (as
    `coalition dev` runs it)."""
    stripe = stripe_simulator
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path_factory.mktemp("portal-data")
    settings = Settings(
        environment="test", database_url=servers.database_url, redis_url=servers.redis_url
    )
    Redis.from_url(servers.redis_url).flushdb()
    asyncio.run(_fresh_demo(settings))
    with _uvicorn(_environment(servers, stripe, base, data_dir), port, data_dir):
        yield PortalServer(base=base, outbox=data_dir / OUTBOX_FILE, stripe=stripe.url)


# How far ahead `days_later` runs: today's daily statements have ended two days later.
DAYS_LATER = 2


@pytest.fixture
def days_later(
    portal_server: PortalServer,
    servers: Servers,
    stripe_simulator: SimulatorServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], PortalServer]]:
    """Start, when called, the same portal (database, Redis, Stripe simulator) as it will be
    `DAYS_LATER` days from now: a second uvicorn and a worker whose clock runs that far ahead
    (`COALITION_CLOCK_OFFSET_SECONDS`, refused in production), so finance can close the
    period in which the test redeemed. The worker runs every job queued meanwhile (payouts,
    reconciliation runs) and the schedules; payouts of any amount from ¥1 up are made. It is
    started only when called: its schedules would run the earlier steps' days-later
    consequences (a campaign activated on its own) under the test's feet."""
    with ExitStack() as stack:

        def start() -> PortalServer:
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            data_dir = tmp_path_factory.mktemp("later-data")
            env = _environment(
                servers,
                stripe_simulator,
                base,
                data_dir,
                COALITION_CLOCK_OFFSET_SECONDS=str(DAYS_LATER * 86_400),
                COALITION_STATEMENT_MINIMUM_PAYOUT="100",
            )
            stack.enter_context(_worker(env, data_dir))
            stack.enter_context(_uvicorn(env, port, data_dir))
            return PortalServer(
                base=base, outbox=data_dir / OUTBOX_FILE, stripe=portal_server.stripe
            )

        yield start


@contextmanager
def _worker(env: dict[str, str], data_dir: Path) -> Iterator[None]:
    """`coalition worker` in its own process, logging the jobs it runs, until the block ends."""
    log = (data_dir / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "coalition.platform.cli", "worker"],
        env={**env, "COALITION_LOG_LEVEL": "INFO"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


@pytest.fixture(scope="module")
def playwright(portal_server: PortalServer) -> Iterator[Playwright]:
    """Module-scoped: the sync driver keeps an event loop running in this thread, so it must be
    gone before the asyncio tests of other folders run (and start after the server's setup)."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Emptied once per run, so that every module's screenshots are kept."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def browser(playwright: Playwright, screenshots: Path) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


def last_code_texted_to(outbox: Path, phone: str) -> str:
    """The newest one-time code in the server's SMS outbox for this number (masked there but
    for its last four digits)."""
    lines = [line for line in outbox.read_text("utf-8").splitlines() if f"*{phone[-4:]}\t" in line]
    assert lines, f"no text to {phone}"
    code = re.search(r"\b(\d{6})\b", lines[-1].split("\t", 2)[2])
    assert code is not None
    return code.group(1)


class Portal:
    """One browser context (its own cookies) on the portal."""

    def __init__(
        self,
        browser: Browser,
        server: PortalServer,
        locale: str,
        mobile: bool,
        javascript: bool = True,
    ) -> None:
        viewport = {"width": 390, "height": 844} if mobile else {"width": 1200, "height": 900}
        self.context = browser.new_context(
            locale=locale, viewport=viewport, java_script_enabled=javascript
        )
        self.context.set_default_timeout(15_000)
        self.page: Page = self.context.new_page()
        self.base = server.base
        self.outbox = server.outbox

    def open(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def sign_in(self, email: str, password: str = DEMO_PASSWORD) -> Page:
        page = self.open("/portal/login")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("form[action='/portal/login'] button[type=submit]")
        return page

    def customer_sign_in(self, phone: str) -> Page:
        page = self.open("/portal/customer/login")
        page.fill("input[name=phone]", phone)
        page.click("form[action='/portal/customer/login'] button[type=submit]")
        page.wait_for_selector("input[name=code]")
        code = last_code_texted_to(self.outbox, phone)
        page.fill("input[name=code]", code)
        page.click("form[action='/portal/customer/verify'] button[type=submit]")
        return page

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def portal(browser: Browser, portal_server: PortalServer) -> Iterator[Callable[..., Portal]]:
    opened: list[Portal] = []

    def open_portal(
        locale: str = "en-US",
        *,
        mobile: bool = False,
        javascript: bool = True,
        server: PortalServer | None = None,
    ) -> Portal:
        portal = Portal(browser, server or portal_server, locale, mobile, javascript)
        opened.append(portal)
        return portal

    yield open_portal
    for portal in opened:
        portal.close()
