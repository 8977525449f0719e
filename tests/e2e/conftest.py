"""Browser tests: the app served by a real uvicorn on a loopback port against the test database
(seeded with the demo world), driven by Playwright through Debian's chromium. Screenshots of
key pages go to `build/e2e-screenshots/`."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from redis import Redis
from sqlalchemy import text

from coalition.platform.app import create_app
from coalition.platform.db import make_engine, make_sessionmaker
from coalition.platform.demo import DEMO_PASSWORD, seed_demo
from coalition.platform.migrate import all_metadata
from coalition.platform.settings import Settings
from coalition.platform.sms import OUTBOX
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
def portal_url(servers: Servers) -> Iterator[str]:
    """The portal on a real uvicorn in this process (so tests can read the SMS outbox), stopped
    with the module so nothing of it runs beside the other folders' tests."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        environment="test",
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        public_url=base,
        login_attempts_per_window=1000,
    )
    Redis.from_url(servers.redis_url).flushdb()
    asyncio.run(_fresh_demo(settings))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", loop="asyncio"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def playwright(portal_url: str) -> Iterator[Playwright]:
    """Module-scoped: the sync driver keeps an event loop running in this thread, so it must be
    gone before the asyncio tests of other folders run (and start after the server's setup)."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


class Portal:
    """One browser context (its own cookies) on the portal."""

    def __init__(self, browser: Browser, base: str, locale: str, mobile: bool) -> None:
        viewport = {"width": 390, "height": 844} if mobile else {"width": 1200, "height": 900}
        self.context = browser.new_context(locale=locale, viewport=viewport)
        self.context.set_default_timeout(15_000)
        self.page: Page = self.context.new_page()
        self.base = base

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
        OUTBOX.clear()
        page = self.open("/portal/customer/login")
        page.fill("input[name=phone]", phone)
        page.click("form[action='/portal/customer/login'] button[type=submit]")
        page.wait_for_selector("input[name=code]")
        message = OUTBOX.messages_to(f"+86{phone}")[-1].message
        code = re.search(r"\b(\d{6})\b", message)
        assert code is not None
        page.fill("input[name=code]", code.group(1))
        page.click("form[action='/portal/customer/verify'] button[type=submit]")
        return page

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def portal(browser: Browser, portal_url: str) -> Iterator[Callable[..., Portal]]:
    opened: list[Portal] = []

    def open_portal(locale: str = "en-US", *, mobile: bool = False) -> Portal:
        portal = Portal(browser, portal_url, locale, mobile)
        opened.append(portal)
        return portal

    yield open_portal
    for portal in opened:
        portal.close()
