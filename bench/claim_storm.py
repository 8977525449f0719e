"""Benchmark: a claim storm through the real HTTP server, against bare SQL on one hot row.

    .venv/bin/python bench/claim_storm.py

Defaults are the campaigns issue's numbers: a 10,000-coupon campaign (per-customer limit 1),
100,000 claim attempts from 20,000 distinct customers (5 each, shuffled, every attempt with its
own Idempotency-Key) by 200 concurrent clients, against `coalition serve --workers 2`.

Starts from a fresh database: a new `coalition_bench_<random>` database on the servers named by
DATABASE_URL and REDIS_URL when both are set (the database is dropped at the end), or else a
private embedded PostgreSQL + Redis in a temporary directory, durable (fsync and synchronous
commit on, as in production; the output says which). Migrates it, writes the customers (COPY),
two organizations and an active campaign with its 64 claim slots straight into the database,
mints one customer token per customer in-process (with the keys given to the server), then
starts the real server the production way (`coalition serve`, uvicorn + uvloop + httptools,
COALITION_ENVIRONMENT=production, logs at WARNING) and measures in the same run:

  storm     every attempt as `POST /api/v1/campaigns/{id}/claims` over keep-alive HTTP/1.1
            connections, one per client; then checks with SQL that exactly the stock was
            claimed, nothing oversold, no customer above its limit, and no 5xx answered;
  baseline  the same stock decrement as bare SQL (asyncpg, one connection per client, each
            statement its own transaction): `UPDATE ... SET remaining = remaining - 1 WHERE
            remaining > 0` on one hot row, and on 64 slotted rows (a free slot by SKIP LOCKED,
            else wait on one row), the same number of attempts against the same stock.

and prints drain time, time to sell out, claims/s, attempts/s, p50/p99 latency of winners and
of losers, where the CPU went, and the ratio to the baselines. The client shares the machine
with the server and PostgreSQL: its CPU share is printed so the figures can be read for what
they are. Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

# Stack frames of our code are shown relative to the repository.
REPOSITORY = f"{Path(__file__).resolve().parent.parent}/"

HOST = "127.0.0.1"
AMOUNT_OFF = 500  # minor units off per coupon
REQUEST_TIMEOUT = 120.0
READY_TIMEOUT = 240.0  # two workers importing the app on a busy 2-CPU machine
PROGRESS_EVERY = 15.0
SLOTS = 64
JWT_KID = "bench-1"
TOKEN_TTL_SECONDS = 6 * 3600  # outlives any storm (the server checks `exp`, not the TTL)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


# --- where it runs ----------------------------------------------------------------------------


@dataclass
class Stack:
    database_url: str  # SQLAlchemy (asyncpg) URL of the fresh database
    redis_url: str
    where: str
    workdir: Path
    pgdata: Path | None  # the embedded server's data directory (for its CPU figures)


@contextmanager
def fresh_stack() -> Iterator[Stack]:
    """A fresh database (dropped afterwards) and a Redis: from the environment or embedded."""
    from sqlalchemy.engine import make_url

    from coalition.platform.settings import to_asyncpg_url

    name = f"coalition_bench_{secrets.token_hex(4)}"
    server, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    tmp = tempfile.TemporaryDirectory(prefix="coalition-claim-storm-")
    workdir = Path(tmp.name)
    stack = None
    pgdata = None
    try:
        if server and redis_url:
            admin = make_url(to_asyncpg_url(server)).set(database="postgres")
            admin_url = admin.render_as_string(hide_password=False)
            where = (
                f"PostgreSQL from DATABASE_URL ({admin.host}:{admin.port}), database {name}; "
                "Redis from REDIS_URL"
            )
        else:
            from coalition.platform.embedded import EmbeddedStack

            stack = EmbeddedStack(workdir / "stack", durable=True)
            stack.start()
            admin_url, redis_url, pgdata = stack.admin_url, stack.redis_url, stack.pgdata
            where = (
                f"embedded PostgreSQL + Redis in {workdir / 'stack'} (durable=True: fsync, "
                f"synchronous_commit and full_page_writes on), database {name}"
            )

        async def admin_sql(sql: str) -> None:
            connection = await asyncpg.connect(_plain(admin_url))
            try:
                await connection.execute(sql)
            finally:
                await connection.close()

        asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
            yield Stack(url, redis_url, where, workdir, pgdata)
        finally:
            asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        if stack is not None:
            stack.stop()
        tmp.cleanup()


# --- CPU accounting (Linux /proc; figures are None elsewhere) ----------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far) for every process we can read."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    table: dict[int, tuple[int, float]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # after the command: state ppid ... utime stime cutime cstime (12th to 15th); the
        # c-fields hold the children it has reaped (PostgreSQL's closed backends, for one)
        used = sum(int(v) for v in fields[11:15])
        table[int(entry.name)] = (int(fields[1]), used / ticks)
    return table


def tree_cpu(root: int | None) -> float | None:
    """CPU seconds used so far by a process and all its descendants, the exited ones included
    (None if unknown)."""
    if root is None:
        return None
    table = _proc_table()
    if root not in table:
        return None
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total


def machine_cpu() -> float | None:
    """CPU seconds all CPUs of the machine spent busy so far (not idle, not waiting for I/O)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return (sum(fields[:8]) - fields[3] - fields[4]) / ticks


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postmaster_pid(pgdata: Path | None) -> int | None:
    if pgdata is None:
        return None
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --- setup ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    customer_id_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    def server_env(self) -> dict[str, str]:
        return {
            "COALITION_ENVIRONMENT": "production",
            "COALITION_JWT_KEYS": json.dumps({JWT_KID: self.jwt_secret}),
            "COALITION_JWT_ACTIVE_KID": JWT_KID,
            "COALITION_CUSTOMER_ID_KEY": self.customer_id_key,
            "COALITION_LOG_LEVEL": "WARNING",
        }


async def setup(database_url: str, keys: Secrets, *, coupons: int, customers: int) -> uuid.UUID:
    """Two organizations, an active campaign with its claim slots, and the customers (COPY)."""
    from bench_campaign import running_campaign

    from coalition.campaigns.domain import Offer
    from coalition.campaigns.services.customer_tokens import external_id_hash
    from coalition.platform.db import make_engine, make_sessionmaker
    from coalition.platform.settings import Settings

    engine = make_engine(Settings(database_url=database_url), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            campaign_id = await running_campaign(
                session,
                name="Claim storm",
                quantity=coupons,
                budget=coupons * AMOUNT_OFF * 2,  # room to spare: quantity is the only limit
                offer=Offer(
                    kind="amount_off", currency="CNY", value=AMOUNT_OFF, valid_days_after_claim=7
                ),
                days=30,
            )
            await session.commit()
    finally:
        await engine.dispose()

    stamp = datetime.now(UTC)
    connection = await asyncpg.connect(_plain(database_url))
    try:
        rows: list[tuple[Any, ...]] = []
        for n in range(customers):
            phone = f"+86139{n:08d}"
            rows.append(
                (
                    uuid.uuid4(),
                    external_id_hash(keys.customer_id_key, phone),
                    "*******" + phone[-4:],
                    1 + n % 7,
                    [],
                    True,
                    stamp,
                    stamp,
                )
            )
        await connection.copy_records_to_table(
            "customer",
            records=rows,
            columns=[
                "id",
                "external_id_hash",
                "phone_hint",
                "tier",
                "tags",
                "on_network",
                "created_at",
                "updated_at",
            ],
        )
        await connection.execute("VACUUM ANALYZE")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return campaign_id


async def customer_ids(database_url: str) -> list[uuid.UUID]:
    connection = await asyncpg.connect(_plain(database_url))
    try:
        return [row[0] for row in await connection.fetch("SELECT id FROM customer ORDER BY id")]
    finally:
        await connection.close()


def mint_tokens(ids: list[uuid.UUID], keys: Secrets) -> list[str]:
    """One customer token per customer, signed with the server's keys (as the OTP exchange
    would hand out)."""
    from coalition.campaigns.services.customer_tokens import issue_customer_token
    from coalition.platform.db import utcnow
    from coalition.platform.settings import Settings

    settings = Settings(
        environment="test",
        customer_token_ttl_seconds=TOKEN_TTL_SECONDS,
        jwt_keys={JWT_KID: keys.jwt_secret},
        jwt_active_kid=JWT_KID,
        customer_id_key=keys.customer_id_key,
    )
    now = utcnow()
    return [issue_customer_token(settings, customer_id=i, now=now)[0] for i in ids]


# --- the server -------------------------------------------------------------------------------


class Server:
    """`coalition serve` as a subprocess, logs to a file."""

    def __init__(self, stack: Stack, keys: Secrets, workers: int) -> None:
        self.port = _free_port()
        self.workers = workers
        self.log_path = stack.workdir / "server.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": stack.database_url,
            "REDIS_URL": stack.redis_url,
            "COALITION_PUBLIC_URL": f"http://{HOST}:{self.port}",
            **keys.server_env(),
        }
        coalition = Path(sys.executable).with_name("coalition")
        launcher = (
            [str(coalition)]
            if coalition.exists()
            else [sys.executable, "-m", "coalition.platform.cli"]
        )
        self.command = [
            *launcher,
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        self.cwd = stack.workdir  # no stray `.env` from the checkout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def pool(self) -> tuple[int, int]:
        """The database pool per worker (size, overflow) that the server's settings give."""
        from coalition.platform.settings import Settings

        settings = Settings(environment="test")  # reads the same COALITION_DB_* variables
        return settings.db_pool_size, settings.db_max_overflow

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            self.command, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/health/ready", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready in {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_lines()[-lines:])


# --- clients ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int  # 0: no HTTP answer (transport error or timeout)
    code: str  # the problem `code` of an error, the coupon id of a 201, or the transport error
    started: float
    ended: float


class HttpError(Exception):
    pass


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client (enough for this server's answers)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _outcome_code(status: int, body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body[:120].decode(errors="replace")
    key = "id" if status == 201 else "code"
    return str(parsed.get(key, "")) if isinstance(parsed, dict) else ""


Send = Callable[[int], Awaitable[tuple[int, bytes]]]


async def fire(
    attempts: int,
    concurrency: int,
    make_sender: Callable[[], Send],
    *,
    label: str,
    max_seconds: float | None = None,
) -> tuple[list[Outcome], float, int]:
    """Run `attempts` requests from `concurrency` closed-loop clients.

    Returns the outcomes of the attempts made (after `max_seconds` no new attempt starts), the
    wall time, and how many requests were re-sent after the connection dropped (the same
    Idempotency-Key, so a re-send is safe).
    """
    outcomes: list[Outcome | None] = [None] * attempts
    deadline = None if not max_seconds else time.perf_counter() + max_seconds

    def numbers() -> Iterator[int]:
        for i in range(attempts):
            if deadline is not None and time.perf_counter() > deadline:
                return
            yield i

    queue = numbers()
    resent = 0
    done = 0
    claimed = 0

    async def client() -> None:
        nonlocal resent, done, claimed
        send = make_sender()
        for i in queue:
            started = time.perf_counter()
            status, code = 0, ""
            for attempt in range(3):
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        status, body = await send(i)
                    code = _outcome_code(status, body)
                    break
                except (OSError, asyncio.IncompleteReadError, HttpError) as exc:
                    code = f"{type(exc).__name__}: {exc}"
                    if attempt < 2:
                        resent += 1
                except TimeoutError:
                    code = f"timeout after {REQUEST_TIMEOUT:.0f} s"
                    break
            outcomes[i] = Outcome(status, code, started, time.perf_counter())
            done += 1
            claimed += status == 201

    async def progress(began: float) -> None:
        last = 0
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            print(
                f"  {label}: {time.perf_counter() - began:5.0f} s, {done:>9,}/{attempts:,} "
                f"attempts ({(done - last) / PROGRESS_EVERY:,.0f}/s now), {claimed:,} claimed",
                flush=True,
            )
            last = done

    began = time.perf_counter()
    ticker = asyncio.create_task(progress(began))
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        ticker.cancel()
    wall = time.perf_counter() - began
    return [o for o in outcomes if o is not None], wall, resent


def raw_senders(
    port: int, path: str, tokens: list[str], plan: list[int], keys: list[str]
) -> Callable[[], Send]:
    host = f"{HOST}:{port}"

    def make() -> Send:
        connection = RawConnection(HOST, port)

        async def send(i: int) -> tuple[int, bytes]:
            data = (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {tokens[plan[i]]}\r\n"
                f"Idempotency-Key: {keys[i]}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            try:
                return await connection.request(data)
            except BaseException:
                connection.close()
                raise

        return send

    return make


def httpx_senders(
    client: Any, path: str, tokens: list[str], plan: list[int], keys: list[str]
) -> Callable[[], Send]:
    import httpx

    def make() -> Send:
        async def send(i: int) -> tuple[int, bytes]:
            try:
                response = await client.post(
                    path,
                    headers={
                        "Authorization": f"Bearer {tokens[plan[i]]}",
                        "Idempotency-Key": keys[i],
                    },
                )
            except httpx.TransportError as exc:
                raise HttpError(str(exc) or type(exc).__name__) from exc
            return response.status_code, response.content

        return send

    return make


# --- what the database sessions were doing ---------------------------------------------------

ACTIVITY = r"""
    SELECT state,
           CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
                ELSE '-' END,
           left(regexp_replace(query, '\s+', ' ', 'g'), 90),
           count(*)
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
    GROUP BY 1, 2, 3
"""


class ActivitySampler:
    """Samples pg_stat_activity of the bench database while the storm runs (one connection,
    a few samples a second), to show where the server's database sessions spend their time."""

    def __init__(self, database_url: str, every: float = 0.25) -> None:
        self.database_url, self.every = database_url, every
        self.samples: list[tuple[float, str, str, str, int]] = []
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        connection = await asyncpg.connect(_plain(self.database_url))
        self._task = asyncio.create_task(self._run(connection))

    async def _run(self, connection: asyncpg.Connection) -> None:
        try:
            while True:
                now = time.perf_counter()
                for state, wait, query, count in await connection.fetch(ACTIVITY):
                    self.samples.append((now, state or "", wait, query or "", count))
                self.count += 1
                await asyncio.sleep(self.every)
        finally:
            await connection.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self, start: float, end: float, top: int = 8) -> list[tuple[float, str]]:
        """(average sessions, what) over the samples taken in [start, end), most first."""
        taken = {t for t, *_ in self.samples if start <= t < end}
        if not taken:
            return []
        totals: Counter[str] = Counter()
        for t, state, wait, query, count in self.samples:
            if start <= t < end:
                what = (
                    f"{state:19} {wait:26} {query}"
                    if state == "active"
                    else f"{state:19} {'':26} {query}"
                )
                totals[what] += count
        return [(n / len(taken), what) for what, n in totals.most_common(top)]


# --- the baselines: bare SQL ------------------------------------------------------------------

HOT_ROW = "UPDATE bench_stock SET remaining = remaining - 1 WHERE id = 1 AND remaining > 0 RETURNING remaining"  # noqa: E501
# A slot nobody holds (SKIP LOCKED); when every slot with stock is held, an unlocked sum says
# whether any is left, and if so the claim waits on exactly one row and re-checks it. (Waiting
# with `... LIMIT 1 FOR UPDATE` instead deadlocks: a row that fails the re-check after the
# wait stays locked while the statement moves on to the next row, in its own order.)
SLOT_FREE = f"""
    UPDATE bench_slot SET remaining = remaining - 1
    WHERE id = (
        SELECT id FROM bench_slot WHERE remaining > 0
        ORDER BY (id - $1 + {SLOTS}) % {SLOTS} LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    RETURNING remaining
"""  # noqa: S608 - constants only
SLOT_LEFT = "SELECT sum(remaining) FROM bench_slot"
SLOT_WAIT = f"""
    UPDATE bench_slot SET remaining = remaining - 1
    WHERE id = (
        SELECT id FROM bench_slot WHERE remaining > 0
        ORDER BY (id - $1 + {SLOTS}) % {SLOTS} LIMIT 1
    ) AND remaining > 0
    RETURNING remaining
"""  # noqa: S608 - constants only
WON = (201, b"{}")
SOLD_OUT = (409, b'{"code": "sold_out"}')


async def sql_connections(database_url: str, wanted: int) -> list[asyncpg.Connection]:
    """Up to `wanted` connections, leaving a few of the server's slots free."""
    probe = await asyncpg.connect(_plain(database_url))
    try:
        limit = int(await probe.fetchval("SHOW max_connections"))
        used = int(await probe.fetchval("SELECT count(*) FROM pg_stat_activity"))
    finally:
        await probe.close()
    count = max(1, min(wanted, limit - used - 3))
    return list(
        await asyncio.gather(*(asyncpg.connect(_plain(database_url)) for _ in range(count)))
    )


async def sql_baseline(
    database_url: str,
    meter: CpuMeter,
    *,
    stock: int,
    attempts: int,
    concurrency: int,
    slotted: bool,
) -> tuple[list[Outcome], float, int, Cpu]:
    setup = await asyncpg.connect(_plain(database_url))
    try:
        await setup.execute(
            "DROP TABLE IF EXISTS bench_stock, bench_slot;"
            "CREATE TABLE bench_stock (id int PRIMARY KEY, remaining int NOT NULL "
            "CHECK (remaining >= 0));"
            "CREATE TABLE bench_slot (id int PRIMARY KEY, remaining int NOT NULL "
            "CHECK (remaining >= 0));"
        )
        await setup.execute("INSERT INTO bench_stock VALUES (1, $1)", stock)
        base, extra = divmod(stock, SLOTS)
        await setup.executemany(
            "INSERT INTO bench_slot VALUES ($1, $2)",
            [(slot, base + (slot < extra)) for slot in range(SLOTS)],
        )
        for statement in ("VACUUM ANALYZE bench_stock", "VACUUM ANALYZE bench_slot", "CHECKPOINT"):
            await setup.execute(statement)
    finally:
        await setup.close()

    connections = await sql_connections(database_url, concurrency)
    pool = list(connections)

    def make() -> Send:
        connection = pool.pop()

        async def hot() -> tuple[int, bytes]:
            return WON if await connection.fetchval(HOT_ROW) is not None else SOLD_OUT

        async def slot() -> tuple[int, bytes]:
            start = random.randrange(SLOTS)
            while True:
                if await connection.fetchval(SLOT_FREE, start) is not None:
                    return WON
                if not await connection.fetchval(SLOT_LEFT):
                    return SOLD_OUT
                if await connection.fetchval(SLOT_WAIT, start) is not None:
                    return WON

        attempt = slot if slotted else hot

        async def send(_: int) -> tuple[int, bytes]:
            try:
                return await attempt()
            except asyncpg.PostgresError as exc:  # reported as a server error, not a crash
                body = {"code": type(exc).__name__, "detail": str(exc)}
                return 500, json.dumps(body).encode()

        return send

    try:
        label = "64 slot rows" if slotted else "hot row"
        before = meter.read()
        outcomes, wall, _ = await fire(attempts, len(connections), make, label=label)
        cpu = meter.since(before)
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return outcomes, wall, len(connections), cpu


# --- figures ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank


@dataclass
class Figures:
    name: str
    wall: float
    attempts: int
    wins: int
    sold_out_at: float | None  # seconds from the start to the last unit of stock
    win_p50: float | None
    win_p99: float | None
    lose_p50: float | None
    lose_p99: float | None
    connections: int
    outcomes: list[Outcome]


def figures(
    name: str, outcomes: list[Outcome], wall: float, stock: int, connections: int
) -> Figures:
    began = min(o.started for o in outcomes)
    wins = sorted(o.ended - began for o in outcomes if o.status == 201)
    won = [o.ended - o.started for o in outcomes if o.status == 201]
    lost = [o.ended - o.started for o in outcomes if o.status != 201]
    return Figures(
        name=name,
        wall=wall,
        attempts=len(outcomes),
        wins=len(wins),
        sold_out_at=wins[stock - 1] if len(wins) >= stock else None,
        win_p50=percentile(won, 0.50),
        win_p99=percentile(won, 0.99),
        lose_p50=percentile(lost, 0.50),
        lose_p99=percentile(lost, 0.99),
        connections=connections,
        outcomes=outcomes,
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:,.1f}"


def _rate(count: int, seconds: float | None) -> str:
    return "n/a" if not seconds else f"{count / seconds:,.0f}"


def print_table(rows: list[Figures], stock: int) -> None:
    header = (
        f"{'':34} {'drain s':>8} {'sell-out s':>10} {'claims/s':>9} {'attempts/s':>10} "
        f"{'win p50':>8} {'win p99':>8} {'lose p50':>8} {'lose p99':>9}"
    )
    print(header)
    print(f"{'':34} {'':>8} {'':>10} {'':>9} {'':>10} {'ms':>8} {'ms':>8} {'ms':>8} {'ms':>9}")
    for r in rows:
        sold = "n/a" if r.sold_out_at is None else f"{r.sold_out_at:.2f}"
        print(
            f"{r.name:34} {r.wall:8.2f} {sold:>10} {_rate(stock, r.sold_out_at):>9} "
            f"{_rate(r.attempts, r.wall):>10} {_ms(r.win_p50):>8} {_ms(r.win_p99):>8} "
            f"{_ms(r.lose_p50):>8} {_ms(r.lose_p99):>9}"
        )


# --- verification -----------------------------------------------------------------------------


async def verify(
    database_url: str,
    campaign_id: uuid.UUID,
    outcomes: list[Outcome],
    *,
    coupons: int,
    attempts: int,
) -> list[tuple[str, bool, str]]:
    connection = await asyncpg.connect(_plain(database_url))
    try:
        held = await connection.fetchrow(
            "SELECT count(*) AS coupons, count(DISTINCT customer_id) AS holders, "
            "count(*) FILTER (WHERE status = 'claimed') AS claimed "
            "FROM coupon WHERE campaign_id = $1",
            campaign_id,
        )
        most = await connection.fetchval(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM coupon "
            "WHERE campaign_id = $1 GROUP BY customer_id) AS per_customer",
            campaign_id,
        )
        slot = await connection.fetchrow(
            "SELECT sum(remaining_quantity) AS remaining, min(remaining_quantity) AS lowest, "
            "sum(claimed) AS claimed, sum(remaining_budget) AS budget "
            "FROM claim_slot WHERE campaign_id = $1",
            campaign_id,
        )
        total_budget = await connection.fetchval(
            "SELECT total_budget FROM campaign WHERE id = $1", campaign_id
        )
        daily = await connection.fetchval(
            "SELECT coalesce(sum(claimed), 0) FROM campaign_daily_stat WHERE campaign_id = $1",
            campaign_id,
        )
        stored = await connection.fetchval(
            "SELECT count(*) FROM idempotency_record WHERE status_code = 201"
        )
        db_ids = {
            str(r[0])
            for r in await connection.fetch(
                "SELECT id FROM coupon WHERE campaign_id = $1", campaign_id
            )
        }
    finally:
        await connection.close()
    answered = [o.code for o in outcomes if o.status == 201]
    server_errors = sum(o.status >= 500 for o in outcomes)
    no_answer = sum(o.status == 0 for o in outcomes)
    count, holders, lowest = held["coupons"], held["holders"], slot["lowest"]
    budget_held = total_budget - slot["budget"]
    matched = set(answered) & db_ids
    return [
        (f"exactly {coupons:,} coupons claimed", count == coupons, f"{count:,} in the database"),
        (
            "0 oversold",
            count <= coupons and lowest >= 0,
            f"{max(0, count - coupons)} oversold, lowest slot {lowest}",
        ),
        (
            "slot counters: 0 remaining, claimed = coupons",
            slot["remaining"] == 0 and slot["claimed"] == count,
            f"remaining {slot['remaining']}, claimed {slot['claimed']:,}",
        ),
        (
            f"budget held = coupons x {AMOUNT_OFF}",
            budget_held == count * AMOUNT_OFF,
            f"{budget_held:,} held",
        ),
        (
            "per-customer limit (1) held",
            most <= 1 and holders == count,
            f"at most {most} per customer, {holders:,} holders",
        ),
        (
            "every 201 is a distinct coupon in the database",
            len(answered) == len(matched) == len(db_ids),
            f"{len(answered):,} answered 201, {len(matched):,} match",
        ),
        (
            "daily figures and stored replies agree",
            daily == count == stored,
            f"figures {daily:,}, idempotency records with 201: {stored:,}",
        ),
        ("0 server errors (5xx)", server_errors == 0, f"{server_errors}"),
        (
            "every attempt made and answered",
            no_answer == 0 and len(outcomes) == attempts,
            f"{len(outcomes):,} of {attempts:,} made, {no_answer} without an HTTP answer",
        ),
    ]


# --- main -------------------------------------------------------------------------------------


def attempt_plan(attempts: int, customers: int, seed: int) -> list[int]:
    """Which customer makes each attempt: everyone about attempts/customers times, shuffled."""
    plan = [n % customers for n in range(attempts)]
    random.Random(seed).shuffle(plan)
    return plan


@dataclass
class Cpu:
    """CPU seconds used during one phase, by who (None: not measurable here)."""

    client: float
    server: float | None
    postgres: float | None
    machine: float | None  # every process on the machine, ours and anybody else's

    @property
    def others(self) -> float | None:
        if self.machine is None:
            return None
        return max(0.0, self.machine - self.client - (self.server or 0) - (self.postgres or 0))


Reading = tuple[float, float | None, float | None, float | None]


class CpuMeter:
    def __init__(self, server_pid: int | None, pg_pid: int | None) -> None:
        self.server_pid, self.pg_pid = server_pid, pg_pid

    def read(self) -> Reading:
        return self_cpu(), tree_cpu(self.server_pid), tree_cpu(self.pg_pid), machine_cpu()

    def since(self, before: Reading) -> Cpu:
        after = self.read()
        return Cpu(
            after[0] - before[0],
            _delta(after[1], before[1]),
            _delta(after[2], before[2]),
            _delta(after[3], before[3]),
        )


@dataclass
class Storm:
    outcomes: list[Outcome]
    wall: float
    resent: int
    cpu: Cpu
    log: list[str]
    activity: ActivitySampler


def run_storm(
    stack: Stack,
    keys: Secrets,
    args: argparse.Namespace,
    campaign_id: uuid.UUID,
    tokens: list[str],
    plan: list[int],
) -> Storm:
    """Start `coalition serve`, warm it up (health checks only), fire every attempt, stop it."""
    import uvloop

    attempts, concurrency = args.attempts, args.concurrency
    run_tag = secrets.token_hex(4)
    idem = [f"storm-{run_tag}-{i:07d}" for i in range(attempts)]
    path = f"/api/v1/campaigns/{campaign_id}/claims"
    server = Server(stack, keys, args.workers)
    pool_size, overflow = server.pool()
    server.start()
    print(
        f"server: coalition serve --workers {args.workers} on {server.base_url} (production, "
        f"JSON logs at WARNING), DB pool {pool_size}+{overflow} "
        "per worker"
    )
    try:
        assert server.process is not None
        meter = CpuMeter(server.process.pid, postmaster_pid(stack.pgdata))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:

            def ready() -> Send:
                connection = RawConnection(HOST, server.port)
                request = f"GET /health/ready HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()

                async def send(_: int) -> tuple[int, bytes]:
                    return await connection.request(request)

                return send

            # opens the workers' database pools; no claim is made
            runner.run(fire(concurrency * 2, concurrency, ready, label="warm-up"))
            sampler = ActivitySampler(stack.database_url)
            runner.run(sampler.start())
            before = meter.read()
            if args.client == "httpx":
                outcomes, wall, resent = runner.run(
                    _httpx_storm(
                        server.base_url, concurrency, path, tokens, plan, idem, args.max_seconds
                    )
                )
            else:
                make = raw_senders(server.port, path, tokens, plan, idem)
                outcomes, wall, resent = runner.run(
                    fire(attempts, concurrency, make, label="storm", max_seconds=args.max_seconds)
                )
            cpu = meter.since(before)
            runner.run(sampler.stop())
    finally:
        server.stop()
    return Storm(outcomes, wall, resent, cpu, server.log_lines(), sampler)


async def _httpx_storm(
    base_url: str,
    concurrency: int,
    path: str,
    tokens: list[str],
    plan: list[int],
    idem: list[str],
    max_seconds: float,
) -> tuple[list[Outcome], float, int]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT
    ) as client:
        make = httpx_senders(client, path, tokens, plan, idem)
        return await fire(len(plan), concurrency, make, label="storm", max_seconds=max_seconds)


def run_baselines(stack: Stack, args: argparse.Namespace) -> list[tuple[Figures, Cpu]]:
    import uvloop

    meter = CpuMeter(None, postmaster_pid(stack.pgdata))
    results = []
    kinds = [("baseline: 1 hot row, bare SQL", False)]
    if not args.no_slotted_baseline:
        kinds.append(("baseline: 64 slot rows, bare SQL", True))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for name, slotted in kinds:
            outcomes, wall, connections, cpu = runner.run(
                sql_baseline(
                    stack.database_url,
                    meter,
                    stock=args.coupons,
                    attempts=args.attempts,
                    concurrency=args.concurrency,
                    slotted=slotted,
                )
            )
            results.append((figures(name, outcomes, wall, args.coupons, connections), cpu))
    return results


async def relation_names(database_url: str, lines: list[str]) -> dict[int, str]:
    """Table names for the relation oids that PostgreSQL's lock errors mention."""
    oids = sorted({int(m) for line in lines for m in re.findall(r"relation (\d+) of", line)})
    if not oids:
        return {}
    connection = await asyncpg.connect(_plain(database_url))
    try:
        rows = await connection.fetch(
            "SELECT oid::int, relname FROM pg_class WHERE oid = ANY($1::oid[])", oids
        )
    finally:
        await connection.close()
    return {int(row[0]): str(row[1]) for row in rows}


def summarize_errors(lines: list[str], relations: dict[int, str]) -> list[str]:
    """One entry per kind of error: count, the exception, where in our code, the SQL."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"event": line, "exception": ""}
        if not isinstance(entry, dict):
            continue
        text = str(entry.get("exception", ""))
        kinds = re.findall(r"^([\w.]+(?:Error|Exception)): (.*)$", text, flags=re.MULTILINE)
        kind = f"{kinds[0][0]}: {kinds[0][1]}" if kinds else str(entry.get("event", ""))[:200]
        entry["_ours"] = [
            f"{m[0].removeprefix(REPOSITORY)}:{m[1]} in {m[2]}"
            for m in re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
            if "site-packages" not in m[0]
        ]
        sql = re.search(r"\[SQL: (.*?)\]\n", text, flags=re.DOTALL)
        entry["_sql"] = " ".join(sql.group(1).split())[:400] if sql else ""
        detail = re.search(r"^DETAIL: (.*?)(?:\nHINT|\Z)", text, flags=re.MULTILINE | re.DOTALL)
        entry["_detail"] = detail.group(1) if detail else ""
        groups.setdefault(kind, []).append(entry)
    out = []
    for kind, entries in sorted(groups.items(), key=lambda item: -len(item[1])):
        first = entries[0]
        out.append(f"{len(entries):>6} x {kind}")
        paths = Counter(str(e.get("path", "")) for e in entries)
        out.append(f"         paths: {dict(paths)}")
        if first["_ours"]:
            out.append("         our frames: " + " -> ".join(first["_ours"][-4:]))
        if first["_sql"]:
            out.append(f"         SQL: {first['_sql']}")
        if first["_detail"]:
            detail = first["_detail"]
            for oid, name in relations.items():
                detail = detail.replace(f"relation {oid} ", f"relation {oid} ({name}) ")
            out.extend("         " + part for part in detail.splitlines())
    return out


def print_activity(storm: Storm, result: Figures) -> None:
    began = min(o.started for o in storm.outcomes)
    end = began + storm.wall
    sold = began + result.sold_out_at if result.sold_out_at is not None else end
    print()
    print(
        "the server's database sessions, sampled from pg_stat_activity "
        f"({storm.activity.count} samples): average sessions in each state"
    )
    for label, start, stop in (("until sell-out", began, sold), ("after sell-out", sold, end)):
        rows = storm.activity.summary(start, stop)
        if not rows:
            continue
        print(f"  {label}:")
        for average, what in rows:
            print(f"    {average:6.1f}  {what}")


def error_lines(log: list[str]) -> list[str]:
    markers = ('"level": "error"', '"level": "critical"', "Traceback", " ERROR ", "CRITICAL")
    return [line for line in log if any(marker in line for marker in markers)]


def report_storm(
    args: argparse.Namespace,
    storm: Storm,
    result: Figures,
    checks: list[tuple[str, bool, str]],
    relations: dict[int, str],
) -> bool:
    """Print what the storm did and whether it held; True when every check passed."""
    print()
    print("claim storm")
    print_table([result], args.coupons)
    tally = Counter((o.status, o.code if o.status != 201 else "") for o in storm.outcomes)
    print("  answers:")
    for (status, code), count in sorted(tally.items()):
        print(f"    {status:>3}  {code or '(a coupon)':40} {count:>9,}")
    client = (
        "raw HTTP/1.1 keep-alive (asyncio streams on uvloop)"
        if args.client == "raw"
        else "httpx.AsyncClient on uvloop"
    )
    print(f"  client: {client}, {args.concurrency} connections, {storm.resent} re-sent requests")
    print("  checks:")
    passed = True
    for name, ok, detail in checks:
        passed = passed and ok
        print(f"    {'PASS' if ok else 'FAIL'}  {name:48} {detail}")
    problems = error_lines(storm.log)
    print(f"  server log: {len(problems)} error lines, {len(storm.log)} lines in all")
    if problems:
        print()
        print("server errors, grouped (from the server's JSON log):")
        for line in summarize_errors(problems, relations):
            print("  " + line)
    print_activity(storm, result)
    return passed


def report_comparison(
    args: argparse.Namespace, storm: Storm, result: Figures, baselines: list[tuple[Figures, Cpu]]
) -> None:
    coupons, cpus = args.coupons, os.cpu_count() or 1
    print()
    print("results")
    print_table([f for f, _ in baselines] + [result], coupons)
    print(
        "  drain: until every attempt was answered; sell-out: until the last unit's answer;\n"
        "  claims/s: stock / sell-out; attempts/s: attempts / drain; latency: one attempt from\n"
        "  send to answer as the client saw it (waiting for a connection or a lock included)"
    )
    for base, _ in baselines:
        errors = sum(o.status >= 500 for o in base.outcomes)
        if base.wins != coupons or errors:
            print(f"  note: {base.name} sold {base.wins:,} of {coupons:,}, {errors} errors")
    print()
    print("claim storm / baseline (1.00x: as fast as bare SQL)")
    for base, _ in baselines:
        print(
            f"  vs {base.name.removeprefix('baseline: ').removesuffix(', bare SQL'):16} "
            f"claims/s {_ratio(base.sold_out_at, result.sold_out_at)}, "
            f"attempts/s {_ratio(base.wall, result.wall)}"
        )
    print()
    print(f"CPU seconds by phase ({cpus} CPUs shared by the client, the server and PostgreSQL)")
    columns = ("client", "API server", "PostgreSQL", "other procs", "idle")
    print(f"  {'':34} {'wall s':>7}" + "".join(f" {c:>14}" for c in columns))
    for fig, cpu in [*baselines, (result, storm.cpu)]:
        capacity = fig.wall * cpus
        idle = None if cpu.machine is None else max(0.0, capacity - cpu.machine)
        cells = [
            "-" if used is None else f"{used:6.1f} {used / capacity:5.0%}"
            for used in (cpu.client, cpu.server, cpu.postgres, cpu.others, idle)
        ]
        print(f"  {fig.name:34} {fig.wall:7.1f}" + "".join(f" {c:>14}" for c in cells))
    print(
        "  (CPU-s and share of all CPUs over the phase; 'other procs': anything else running on\n"
        "  the machine meanwhile, e.g. somebody's test run; '-': not measurable here)"
    )


def run(args: argparse.Namespace) -> int:
    from coalition.platform import migrate

    keys = Secrets()
    print(
        f"claim storm: {args.coupons:,} coupons, {args.attempts:,} attempts from "
        f"{args.customers:,} customers, {args.concurrency} concurrent clients, "
        f"`coalition serve --workers {args.workers}`"
    )
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with fresh_stack() as stack:
        print(f"database: {stack.where}")
        began = time.perf_counter()
        migrate.upgrade(stack.database_url)
        campaign_id = asyncio.run(
            setup(stack.database_url, keys, coupons=args.coupons, customers=args.customers)
        )
        tokens = mint_tokens(asyncio.run(customer_ids(stack.database_url)), keys)
        plan = attempt_plan(args.attempts, args.customers, args.seed)
        print(
            f"setup: migrated, {args.customers:,} customers (COPY), an active campaign "
            f"(per-customer limit 1, {SLOTS} claim slots), {len(tokens):,} customer tokens "
            f"({time.perf_counter() - began:.1f} s, not timed)"
        )
        storm = run_storm(stack, keys, args, campaign_id, tokens, plan)
        checks = asyncio.run(
            verify(
                stack.database_url,
                campaign_id,
                storm.outcomes,
                coupons=args.coupons,
                attempts=args.attempts,
            )
        )
        relations = asyncio.run(relation_names(stack.database_url, error_lines(storm.log)))
        result = figures(
            "claim storm (HTTP API)", storm.outcomes, storm.wall, args.coupons, args.concurrency
        )
        passed = report_storm(args, storm, result, checks, relations)
        print()
        print("baselines: bare SQL (asyncpg), the API server stopped", flush=True)
        baselines = run_baselines(stack, args)
        report_comparison(args, storm, result, baselines)
        return 0 if passed else 1


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--coupons", type=int, default=10_000, help="the campaign's stock")
    parser.add_argument("--attempts", type=int, default=100_000, help="claim attempts")
    parser.add_argument("--customers", type=int, default=20_000, help="distinct customers")
    parser.add_argument("--concurrency", type=int, default=200, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="`coalition serve --workers`")
    parser.add_argument(
        "--client", choices=("raw", "httpx"), default="raw", help="HTTP client of the storm"
    )
    parser.add_argument("--seed", type=int, default=1, help="shuffle of the attempts")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=1800,
        help="start no new attempt after this long (a safety net; 0: none)",
    )
    parser.add_argument(
        "--no-slotted-baseline", action="store_true", help="skip the 64-row SQL baseline"
    )
    args = parser.parse_args()
    if min(args.coupons, args.attempts, args.customers, args.concurrency, args.workers) < 1:
        parser.error("every count must be at least 1")

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
