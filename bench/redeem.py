"""Benchmark: N POS terminals redeem distinct coupons concurrently through the real server,
against the floor: the identical database work done by a bare asyncpg loop.

    .venv/bin/python bench/redeem.py            # 32 terminals, 8,000 redemptions

Starts from a fresh database (a new `coalition_bench_<random>` database on the servers named
by `DATABASE_URL` and `REDIS_URL` when both are set, else a private embedded PostgreSQL, durable:
fsync and synchronous commit on, and Redis), migrates it, and writes a carrier, a café with one
store and N+1 terminals, an active 60/40 campaign and one claimed coupon per redemption (each
held by its own customer).

1. **The server**: `coalition serve --workers 2` with `COALITION_ENVIRONMENT=production`, as
   deployed. N closed-loop clients, one per terminal, each on its own keep-alive connection,
   send `POST /api/v1/pos/redemptions` (each with its own coupon and `Idempotency-Key`) until
   every coupon is redeemed; a short warm-up first (not timed).
2. **The floor**: the statements the server ran for one redemption are recorded (SQLAlchemy
   cursor events, in-process, on a template terminal and coupon): every statement, its
   parameters, and which connection and transaction it ran in. A bare asyncpg loop with the
   same concurrency (one connection per client) replays them for the other coupons, with the
   coupon, customer, terminal, key and Idempotency-Key swapped in and fresh ids for the rows
   created: the same statements in the same transactions (authentication, the redemption, and
   the outbox update after it, in the background as in the server). It is replayed again with
   the clients sharing 2, 4 and 8 connections (`--floor-pools`), since PostgreSQL on few CPUs
   does more with a few busy backends than with one per terminal.
3. **The profile**: the redemption run in-process under cProfile, time grouped by where it is
   spent (the shared request stack, our services, SQLAlchemy, asyncpg, Litestar ...), and the
   CPU used per redemption by the server, PostgreSQL, the client and other processes.

Prints redemptions/s, p50/p99 latency, the ratio to the floor, and the profile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from claim_storm import (
    HOST,
    RawConnection,
    Secrets,
    Server,
    Stack,
    _plain,
    fresh_stack,
    machine_cpu,
    postmaster_pid,
    self_cpu,
    tree_cpu,
)

BASKET = 10_000  # 100.00 CNY; the campaign takes 5.00 off
AMOUNT_OFF = 500
PATH = "/api/v1/pos/redemptions"
RATE_LIMIT = 10**9
CONTROL = {
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "START",
    "END",
    "SAVEPOINT",
    "RELEASE",
}  # the limiter stays on the path (its cost is measured), never refusing


# --- setup ------------------------------------------------------------------------------------


@dataclass
class Coupons:
    codes: list[str]
    ids: list[uuid.UUID]
    customers: list[uuid.UUID]


@dataclass
class Till:
    terminal_id: uuid.UUID
    key: str  # ctk_<key id>_<secret>

    @property
    def key_id(self) -> str:
        return self.key.split("_")[1]


@dataclass
class World:
    campaign_id: uuid.UUID
    tills: list[Till]  # the benchmark's terminals
    template: Till  # the terminal whose redemption is recorded and profiled
    server: Coupons
    floor: Coupons
    template_coupons: Coupons
    static_ids: set[uuid.UUID]


async def setup(
    database_url: str, terminals: int, redemptions: int, warmup: int, profile: int, pooled: int
) -> World:
    from bench_campaign import running_campaign
    from sqlmodel import select

    from coalition.campaigns import codes
    from coalition.campaigns.domain import Offer
    from coalition.merchants.models import Organization
    from coalition.merchants.services import stores
    from coalition.merchants.services import terminals as terminal_service
    from coalition.platform.db import make_engine, make_sessionmaker
    from coalition.platform.settings import Settings

    server_count = redemptions + warmup * terminals
    template_count = 2 + profile
    floor_count = redemptions + pooled
    total = server_count + floor_count + template_count
    engine = make_engine(Settings(database_url=database_url), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            campaign_id = await running_campaign(
                session,
                name="Redemption bench",
                quantity=total,
                budget=total * AMOUNT_OFF,
                offer=Offer(
                    kind="amount_off", currency="CNY", value=AMOUNT_OFF, valid_days_after_claim=7
                ),
                days=30,
            )
            cafe = (
                await session.execute(select(Organization).where(Organization.kind == "merchant"))
            ).scalar_one()
            store = await stores.create_store(
                session,
                None,
                cafe,
                name="Bench Café Nanjing Rd",
                address="1 Nanjing Rd",
                city="Shanghai",
            )
            tills = []
            for n in range(terminals + 1):
                terminal, key = await terminal_service.register_terminal(
                    session, None, store, f"Till {n}"
                )
                tills.append(Till(terminal.id, key.full))
            await session.commit()
    finally:
        await engine.dispose()

    now = datetime.now(UTC)
    connection = await asyncpg.connect(_plain(database_url))
    try:
        customers = [uuid.uuid4() for _ in range(total)]
        await connection.copy_records_to_table(
            "customer",
            records=[
                (c, secrets.token_hex(32), "*******0000", 1, [], True, now, now) for c in customers
            ],
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
        coupon_ids = [uuid.uuid4() for _ in range(total)]
        coupon_codes = [codes.new_code() for _ in range(total)]
        await connection.copy_records_to_table(
            "coupon",
            records=[
                (
                    i,
                    campaign_id,
                    code,
                    c,
                    1,
                    now.date(),
                    "claimed",
                    n % 64,
                    AMOUNT_OFF,
                    [300, 200],
                    now - timedelta(hours=1),
                    now + timedelta(days=7),
                    now,
                    now,
                )
                for n, (i, code, c) in enumerate(
                    zip(coupon_ids, coupon_codes, customers, strict=True)
                )
            ],
            columns=[
                "id",
                "campaign_id",
                "code",
                "customer_id",
                "holder_seq",
                "claim_day",
                "status",
                "slot",
                "reserved_amount",
                "funder_reserved",
                "valid_from",
                "valid_until",
                "issued_at",
                "claimed_at",
            ],
        )
        static = {
            row[0]
            for table in ("organization", "campaign", "store", "ledger_account")
            for row in await connection.fetch(f"SELECT id FROM {table}")  # noqa: S608 - fixed names
        }
        # Only what the setup wrote. Vacuuming the tables the redemptions fill while they are
        # still empty records them as known to be empty: the plans the server's connections
        # cache during the warm-up (foreign-key checks and trigger queries included) would
        # then scan them, and keep scanning them while they grow, until autovacuum analyzes
        # them a minute later (see bench/README.md).
        await connection.execute("VACUUM ANALYZE customer")
        await connection.execute("VACUUM ANALYZE coupon")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()

    def part(a: int, b: int) -> Coupons:
        return Coupons(coupon_codes[a:b], coupon_ids[a:b], customers[a:b])

    return World(
        campaign_id=campaign_id,
        tills=tills[:terminals],
        template=tills[terminals],
        server=part(0, server_count),
        floor=part(server_count, server_count + floor_count),
        template_coupons=part(server_count + floor_count, total),
        static_ids=static | {campaign_id},
    )


# --- the server -------------------------------------------------------------------------------


def request_bytes(port: int, till: Till, code: str, key: str) -> bytes:
    body = json.dumps(
        {"code": code, "basket_amount": BASKET, "currency": "CNY", "order_ref": key}
    ).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {till.key}\r\n"
        f"Idempotency-Key: {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


@dataclass
class Run:
    wall: float
    latencies: list[float]  # seconds
    answers: Counter[str]
    cpu: dict[str, float | None]
    by_terminal: list[list[float]]  # the same latencies, per terminal


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


async def drive_server(
    port: int, world: World, redemptions: int, warmup: int, snapshot: Any
) -> tuple[float, list[float], Counter[str], Any, list[list[float]]]:
    terminals = len(world.tills)
    codes = world.server.codes
    answers: Counter[str] = Counter()
    latencies: list[float] = []
    by_terminal: list[list[float]] = [[] for _ in range(terminals)]

    async def warm(n: int, connection: RawConnection) -> None:
        till = world.tills[n]
        for w in range(warmup):
            index = redemptions + n * warmup + w
            status, _ = await connection.request(
                request_bytes(port, till, codes[index], f"bench-warm-{index:06d}")
            )
            if status != 201:
                raise RuntimeError(f"warm-up redemption answered {status}")

    connections = [RawConnection(HOST, port) for _ in range(terminals)]
    await asyncio.gather(*(warm(n, c) for n, c in enumerate(connections)))
    before = snapshot()
    queue = iter(range(redemptions))

    async def client(n: int) -> None:
        till, connection = world.tills[n], connections[n]
        for i in queue:
            data = request_bytes(port, till, codes[i], f"bench-key-{i:06d}")
            started = time.perf_counter()
            status, body = await connection.request(data)
            latencies.append(time.perf_counter() - started)
            by_terminal[n].append(latencies[-1])
            answers[str(status) if status == 201 else f"{status} {body[:80]!r}"] += 1

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(terminals)))
    wall = time.perf_counter() - began
    for connection in connections:
        connection.close()
    return wall, latencies, answers, before, by_terminal


def cpu_snapshot(server_pid: int | None, pg_pid: int | None) -> dict[str, float | None]:
    return {
        "client": self_cpu(),
        "server": tree_cpu(server_pid),
        "postgres": tree_cpu(pg_pid),
        "machine": machine_cpu(),
    }


def cpu_delta(
    before: dict[str, float | None], after: dict[str, float | None]
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in before:
        a, b = after[name], before[name]
        out[name] = None if a is None or b is None else a - b
    known = [out[k] for k in ("client", "server", "postgres")]
    machine = out["machine"]
    out["others"] = (
        None
        if machine is None or any(v is None for v in known)
        else max(0.0, machine - sum(v or 0.0 for v in known))
    )
    return out


def run_server(stack: Stack, keys: Secrets, world: World, args: argparse.Namespace) -> Run:
    server = Server(stack, keys, args.workers)
    server.env.update(
        {
            "COALITION_POS_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
            "COALITION_POS_RATE_LIMIT_BURST": str(RATE_LIMIT),
            "COALITION_DB_POOL_SIZE": str(max(10, args.terminals // args.workers + 2)),
        }
    )
    server.start()
    try:
        assert server.process is not None
        pid, pg = server.process.pid, postmaster_pid(stack.pgdata)
        time.sleep(3)  # every worker process has booted (the ready check reaches one)
        wall, latencies, answers, before, by_terminal = asyncio.run(
            drive_server(
                server.port,
                world,
                args.redemptions,
                args.warmup,
                lambda: cpu_snapshot(pid, pg),
            )
        )
        after = cpu_snapshot(pid, pg)
        return Run(wall, latencies, answers, cpu_delta(before, after), by_terminal)
    finally:
        server.stop()


# --- recording one redemption's statements ------------------------------------------------------


@dataclass
class Statement:
    sql: str
    params: Any  # a tuple, or a list of tuples for executemany
    many: bool


@dataclass
class Unit:
    """Statements that ran in one transaction on one connection, and how it ended."""

    statements: list[Statement]
    ending: str  # commit | rollback
    background: bool  # after the answer (the post-commit outbox update)


def _settings(stack: Stack) -> Any:
    from coalition.platform.settings import Settings

    return Settings(
        environment="test",
        database_url=stack.database_url,
        redis_url=stack.redis_url,
        pos_rate_limit_per_minute=RATE_LIMIT,
        pos_rate_limit_burst=RATE_LIMIT,
        log_level="WARNING",
    )


async def existing_ids(database_url: str) -> set[uuid.UUID]:
    """Ids of the rows a redemption refers to but does not create."""
    connection = await asyncpg.connect(_plain(database_url))
    try:
        return {
            row[0]
            for table in ("organization", "campaign", "store", "ledger_account", "webhook_endpoint")
            for row in await connection.fetch(f"SELECT id FROM {table}")  # noqa: S608 - fixed names
        }
    finally:
        await connection.close()


async def record(stack: Stack, world: World) -> list[Unit]:
    """The statements one redemption runs (after a warm-up call of the same terminal)."""
    from litestar.testing import AsyncTestClient
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from coalition.platform import jobs
    from coalition.platform.app import create_app

    events: list[tuple[str, int, Statement | None]] = []
    recording = False

    def driver_of(conn: Any) -> int:
        return id(conn.connection.dbapi_connection.driver_connection)

    def on_execute(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        if recording:
            events.append(("exec", driver_of(conn), Statement(statement, parameters, executemany)))

    def on_end(kind: str) -> Any:
        def listener(conn: Any) -> None:
            if recording:
                events.append((kind, driver_of(conn), None))

        return listener

    # Statements sent straight through the driver (the hot path's plain SQL) are recorded
    # too: asyncpg's own query methods, which SQLAlchemy itself does not use.
    originals = {
        name: getattr(asyncpg.Connection, name)
        for name in ("execute", "fetch", "fetchrow", "fetchval", "executemany")
    }

    def spy(name: str) -> Any:
        original = originals[name]

        async def call(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
            # BEGIN / COMMIT / ROLLBACK (the dialect's, or a bare connection's transaction): the
            # replay's transactions send them; a commit or rollback ends the recorded one
            verb = query.strip().rstrip(";").split(" ")[0].upper()
            if recording and verb in ("COMMIT", "ROLLBACK"):
                events.append((verb.lower(), id(self), None))
            elif recording and verb not in CONTROL:
                many = name == "executemany"
                params = list(args[0]) if many else args
                events.append(("exec", id(self), Statement(query, params, many)))
            return await original(self, query, *args, **kwargs)

        return call

    commit_listener, rollback_listener = on_end("commit"), on_end("rollback")
    event.listen(Engine, "before_cursor_execute", on_execute)
    event.listen(Engine, "commit", commit_listener)
    event.listen(Engine, "rollback", rollback_listener)
    for name in originals:
        setattr(asyncpg.Connection, name, spy(name))
    till, coupons = world.template, world.template_coupons
    headers = {"Authorization": f"Bearer {till.key}"}
    try:
        async with AsyncTestClient(
            app=create_app(_settings(stack)), base_url="http://t.local"
        ) as client:
            warm = await client.post(
                PATH,
                json={
                    "code": coupons.codes[0],
                    "basket_amount": BASKET,
                    "currency": "CNY",
                    "order_ref": "warm",
                },
                headers={**headers, "Idempotency-Key": "bench-template-warm"},
            )
            assert warm.status_code == 201, warm.text
            await jobs.drain_dispatches()
            world.static_ids |= await existing_ids(stack.database_url)
            recording = True
            answer = await client.post(
                PATH,
                json={
                    "code": coupons.codes[1],
                    "basket_amount": BASKET,
                    "currency": "CNY",
                    "order_ref": "bench-template",
                },
                headers={**headers, "Idempotency-Key": "bench-template"},
            )
            assert answer.status_code == 201, answer.text
            await asyncio.sleep(0.2)
            await jobs.drain_dispatches()
            recording = False
    finally:
        for name, original in originals.items():
            setattr(asyncpg.Connection, name, original)
        event.remove(Engine, "before_cursor_execute", on_execute)
        event.remove(Engine, "commit", commit_listener)
        event.remove(Engine, "rollback", rollback_listener)

    units: list[Unit] = []
    open_units: dict[int, list[Statement]] = {}
    for kind, connection, statement in events:
        if kind == "exec":
            assert statement is not None
            open_units.setdefault(connection, []).append(statement)
        elif connection in open_units:
            done = open_units.pop(connection)
            background = done[0].sql.lstrip().upper().startswith("UPDATE JOB_OUTBOX")
            units.append(Unit(done, kind, background))
    for left in open_units.values():
        units.append(Unit(left, "rollback", False))
    return units


def _swap(
    value: Any, ids: dict[uuid.UUID, uuid.UUID], fresh: set[uuid.UUID], texts: dict[str, str]
) -> Any:
    if isinstance(value, uuid.UUID):
        if value in ids:
            return ids[value]
        if value in fresh:
            ids[value] = uuid.uuid4()
            texts[str(value)] = str(ids[value])
            return ids[value]
        return value
    if isinstance(value, str):
        if value in texts:
            return texts[value]
        for old, new in texts.items():
            if old in value:
                value = value.replace(old, new)
        return value
    if isinstance(value, list | tuple):
        return type(value)(_swap(v, ids, fresh, texts) for v in value)
    return value


def _uuids(value: Any) -> set[uuid.UUID]:
    if isinstance(value, uuid.UUID):
        return {value}
    if isinstance(value, list | tuple):
        return set().union(*(_uuids(v) for v in value)) if value else set()
    return set()


def plan_floor(units: list[Unit], world: World, terminals: int) -> list[list[Unit]]:
    """One list of units per floor redemption, the template's values swapped for its own."""
    template_till, template = world.template, world.template_coupons
    known = {template.ids[1], template.customers[1], template_till.terminal_id}
    seen = set().union(*(_uuids(s.params) for u in units for s in u.statements))
    fresh = seen - known - world.static_ids
    plans = []
    for i, (code, coupon_id, customer) in enumerate(
        zip(world.floor.codes, world.floor.ids, world.floor.customers, strict=True)
    ):
        till = world.tills[i % terminals]
        ids = {
            template.ids[1]: coupon_id,
            template.customers[1]: customer,
            template_till.terminal_id: till.terminal_id,
        }
        texts = {
            str(template.ids[1]): str(coupon_id),
            str(template.customers[1]): str(customer),
            str(template_till.terminal_id): str(till.terminal_id),
            template.codes[1]: code,
            template_till.key_id: till.key_id,
            "bench-template": f"bench-floor-{i}",
        }
        plans.append(
            [
                Unit(
                    [
                        Statement(s.sql, _swap(s.params, ids, fresh, texts), s.many)
                        for s in u.statements
                    ],
                    u.ending,
                    u.background,
                )
                for u in units
            ]
        )
    return plans


async def _codecs(connection: asyncpg.Connection) -> None:
    """What SQLAlchemy's asyncpg dialect installs: JSON arrives serialized."""
    await connection.set_type_codec(
        "json", encoder=str.encode, decoder=json.loads, schema="pg_catalog", format="binary"
    )
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda s: b"\x01" + s.encode(),
        decoder=lambda b: json.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def run_unit(connection: asyncpg.Connection, unit: Unit) -> None:
    transaction = connection.transaction()
    await transaction.start()
    try:
        for statement in unit.statements:
            if statement.many:
                await connection.executemany(statement.sql, statement.params)
            else:
                await connection.fetch(statement.sql, *statement.params)
    except BaseException:
        await transaction.rollback()
        raise
    if unit.ending == "commit":
        await transaction.commit()
    else:
        await transaction.rollback()


async def drive_floor(
    database_url: str, plans: list[list[Unit]], terminals: int, pool: int | None = None
) -> tuple[float, list[float]]:
    """`terminals` closed-loop clients replay `plans`: each on a connection of its own, or,
    with `pool`, sharing that many connections (a client takes one per redemption, in
    arrival order, as the server's requests do)."""
    count = terminals if pool is None else pool
    connections = [await asyncpg.connect(_plain(database_url)) for _ in range(count)]
    for connection in connections:
        await _codecs(connection)
    free: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
    for connection in connections:
        free.put_nowait(connection)
    gate = asyncio.Semaphore(count)  # first come, first served, as `provide_db`'s gate
    background = await asyncpg.create_pool(
        _plain(database_url), min_size=4, max_size=8, init=_codecs
    )
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def in_background(unit: Unit) -> None:
        async with background.acquire() as connection:
            await run_unit(connection, unit)

    queue = iter(plans)

    async def client() -> None:
        for plan in queue:
            started = time.perf_counter()
            async with gate:
                connection = free.get_nowait()
                try:
                    for unit in plan:
                        if unit.background:
                            task = asyncio.create_task(in_background(unit))
                            pending.add(task)
                            task.add_done_callback(pending.discard)
                        else:
                            await run_unit(connection, unit)
                finally:
                    free.put_nowait(connection)
            latencies.append(time.perf_counter() - started)

    try:
        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(terminals)))
        wall = time.perf_counter() - began
        await asyncio.gather(*pending)
    finally:
        for connection in connections:
            await connection.close()
        await background.close()
    return wall, latencies


# --- the profile ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
BUCKETS = (
    ("platform/auth.py", "shared stack: platform/auth.py"),
    ("platform/observability.py", "shared stack: platform/observability.py"),
    ("platform/db.py", "shared stack: platform/db.py"),
    ("platform/app.py", "shared stack: platform/app.py"),
    ("merchants/services/identity.py", "credential lookup (merchants/services/identity.py)"),
    ("campaigns/", "redemption: campaigns/"),
    ("settlement/", "redemption: settlement/ (ledger)"),
    ("merchants/", "redemption: merchants/ (webhooks)"),
    ("platform/", "platform/ other (jobs, idempotency, errors ...)"),
    ("/sqlalchemy/", "SQLAlchemy (ORM + core)"),
    ("/sqlmodel/", "SQLAlchemy (ORM + core)"),
    ("/asyncpg/", "asyncpg"),
    ("/litestar/", "Litestar"),
    ("/msgspec/", "msgspec"),
    ("/structlog/", "structlog"),
    ("/prometheus_client/", "prometheus_client"),
    ("/httpx/", "the in-process test client (not in production)"),
    ("/httpcore/", "the in-process test client (not in production)"),
    ("/anyio/", "the in-process test client (not in production)"),
    ("/asyncio/", "asyncio event loop"),
)


def bucket_of(filename: str) -> str:
    path = filename.replace(os.sep, "/")
    root = str(ROOT).replace(os.sep, "/") + "/"
    if path.startswith(root) and "/.venv/" not in path:
        relative = path[len(root) :]
        for fragment, name in BUCKETS:
            if relative.startswith(fragment):
                return name
        return "other project code"
    for fragment, name in BUCKETS:
        if fragment.startswith("/") and fragment in path:
            return name
    if path.startswith(("~", "<")):
        return "C functions (hashing, json, sockets, ...)"
    return "other libraries"


async def _profiled(stack: Stack, world: World, count: int, concurrency: int) -> cProfile.Profile:
    """Redemptions through the ASGI app on this event loop (no HTTP server, no thread), with
    cProfile timing CPU, so waiting for PostgreSQL costs nothing in the figures."""
    import httpx

    from coalition.platform import jobs
    from coalition.platform.app import create_app

    till, coupons = world.template, world.template_coupons
    headers = {"Authorization": f"Bearer {till.key}"}
    profile = cProfile.Profile(time.process_time)
    app = create_app(_settings(stack))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        queue = iter(range(2, 2 + count))

        async def one() -> None:
            for i in queue:
                answer = await client.post(
                    PATH,
                    json={
                        "code": coupons.codes[i],
                        "basket_amount": BASKET,
                        "currency": "CNY",
                        "order_ref": f"p{i}",
                    },
                    headers={**headers, "Idempotency-Key": f"bench-profile-{i:06d}"},
                )
                assert answer.status_code == 201, answer.text

        profile.enable()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        await jobs.drain_dispatches()
        profile.disable()
    return profile


def report_profile(profile: cProfile.Profile, count: int) -> None:
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    per_bucket: Counter[str] = Counter()
    for (filename, _, _), (_, _, tottime, _, _) in raw.items():
        per_bucket[bucket_of(filename)] += tottime
    client = sum(v for k, v in per_bucket.items() if "test client" in k)
    total = sum(per_bucket.values()) - client
    print(
        f"  in-process, {count} redemptions under cProfile (own time of each function, "
        f"grouped; the test client's {client / count * 1000:.2f} ms/redemption left out):"
    )
    for name, seconds in per_bucket.most_common():
        if "test client" in name:
            continue
        print(f"    {name:58} {seconds / count * 1000:7.2f} ms  {seconds / total:6.1%}")
    print(f"    {'total':58} {total / count * 1000:7.2f} ms  (cProfile inflates; read the shares)")
    phases = {
        "BearerAuthMiddleware.authenticate_request": ("platform/auth.py", "authenticate_request"),
        "redemptions.redeem (the service, whole)": ("redemptions.py", "redeem"),
        "  idempotency.begin": ("idempotency.py", "begin"),
        "  load_coupon (one locked read)": ("redemptions.py", "load_coupon"),
        "  record_redemption": ("redemptions.py", "record_redemption"),
        "    redemption_sql.record (the one writing statement)": ("redemption_sql.py", "record"),
        "    webhooks.emit_event_on": ("webhooks.py", "emit_event_on"),
        "  jobs.dispatch_committed": ("platform/jobs.py", "dispatch_committed"),
        "provide_db (pooled asyncpg connection per request)": ("platform/app.py", "provide_db"),
        "provide_session (db session per request)": ("platform/app.py", "provide_session"),
    }
    print("  top functions by own CPU time:")
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)
    shown = 0
    for (filename, line, function), (_, calls, tottime, _, _) in top:
        if "test client" in bucket_of(filename):
            continue
        where = filename.replace(str(ROOT) + os.sep, "").split("site-packages/")[-1]
        print(
            f"    {tottime / count * 1000:6.3f} ms  {calls / count:6.1f} calls  "
            f"{where}:{line} {function}"
        )
        shown += 1
        if shown == 15:
            break
    print("  inclusive CPU per phase (coroutine time while running, callees included):")
    for label, (file_end, function) in phases.items():
        found = [v for (f, _, fn), v in raw.items() if f.endswith(file_end) and fn == function]
        if found:
            cumulative = sum(v[3] for v in found)
            print(f"    {label:58} {cumulative / count * 1000:7.2f} ms")


# --- report -----------------------------------------------------------------------------------


def cpu_line(name: str, wall: float, count: int, cpu: dict[str, float | None]) -> str:
    cells = []
    for key in ("server", "client", "postgres", "others"):
        value = cpu.get(key)
        cells.append(
            "-"
            if value is None
            else f"{value / count * 1000:6.2f} ms {value / wall / (os.cpu_count() or 1):4.0%}"
        )
    return f"  {name:30}" + "".join(f" {c:>16}" for c in cells)


def run(args: argparse.Namespace) -> int:
    from coalition.platform import migrate

    keys = Secrets()
    print(
        f"redemption bench: {args.terminals} terminals, {args.redemptions:,} redemptions of "
        f"distinct coupons, `coalition serve --workers {args.workers}` (production)"
    )
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with fresh_stack() as stack:
        print(f"database: {stack.where}")
        began = time.perf_counter()
        migrate.upgrade(stack.database_url)
        pooled = args.redemptions // 2  # redemptions per pooled replay of the floor
        world = asyncio.run(
            setup(
                stack.database_url,
                args.terminals,
                args.redemptions,
                args.warmup,
                args.profile,
                pooled * len(args.floor_pools),
            )
        )
        print(
            "setup: migrated, terminals, coupons and customers written "
            f"({time.perf_counter() - began:.1f} s, not timed)"
        )

        served = run_server(stack, keys, world, args)
        count = len(served.latencies)
        print()
        print("the server (HTTP, `POST /api/v1/pos/redemptions`):")
        print(f"  answers: {dict(served.answers)}")
        print(
            f"  {count / served.wall:,.0f} redemptions/s over {served.wall:.1f} s; latency p50 "
            f"{ms(served.latencies, 0.5):.1f} ms, p99 {ms(served.latencies, 0.99):.1f} ms"
        )
        means = sorted(sum(t) / len(t) * 1000 for t in served.by_terminal if t)
        print(
            f"  mean latency per terminal: lowest {means[0]:.1f} ms, median "
            f"{means[len(means) // 2]:.1f} ms, highest {means[-1]:.1f} ms (terminals on a busier "
            "worker process wait longer)"
        )

        units = asyncio.run(record(stack, world))
        statements = sum(len(u.statements) for u in units)
        print()
        print(
            f"the floor: {statements} statements in {len(units)} transactions per redemption, "
            "replayed by bare asyncpg:"
        )
        for unit in units:
            tag = " (background)" if unit.background else ""
            print(f"  transaction ({unit.ending}{tag}):")
            for s in unit.statements:
                print(f"    {' '.join(s.sql.split())[:110]}{' [many]' if s.many else ''}")
        plans = plan_floor(units, world, args.terminals)
        pg = postmaster_pid(stack.pgdata)
        before = cpu_snapshot(None, pg)
        floor_wall, floor_latencies = asyncio.run(
            drive_floor(stack.database_url, plans[: args.redemptions], args.terminals)
        )
        floor_cpu = cpu_delta(before, cpu_snapshot(None, pg))
        floor_rate = len(floor_latencies) / floor_wall
        print(
            f"  {floor_rate:,.0f} redemptions/s over {floor_wall:.1f} s; latency p50 "
            f"{ms(floor_latencies, 0.5):.1f} ms, p99 {ms(floor_latencies, 0.99):.1f} ms"
        )
        # The same replay with the terminals sharing fewer connections: PostgreSQL on 2 CPUs
        # does more with a few busy backends than with one per terminal.
        shared: list[tuple[int, float, list[float]]] = []
        for n, size in enumerate(args.floor_pools):
            start = args.redemptions + n * pooled
            wall, latencies = asyncio.run(
                drive_floor(
                    stack.database_url,
                    plans[start : start + pooled],
                    args.terminals,
                    pool=size,
                )
            )
            shared.append((size, len(latencies) / wall, latencies))
            print(
                f"  {args.terminals} terminals sharing {size} connections: "
                f"{len(latencies) / wall:,.0f} redemptions/s over {wall:.1f} s; latency p50 "
                f"{ms(latencies, 0.5):.1f} ms, p99 {ms(latencies, 0.99):.1f} ms"
            )

        server_rate = count / served.wall
        print()
        print("comparison:")
        print(f"  {'':30} {'redemptions/s':>14} {'p50 ms':>8} {'p99 ms':>8}")
        print(
            f"  {'floor (bare asyncpg)':30} {floor_rate:14,.0f} "
            f"{ms(floor_latencies, 0.5):8.1f} {ms(floor_latencies, 0.99):8.1f}"
        )
        for size, rate, latencies in shared:
            print(
                f"  {f'floor, {size} shared connections':30} {rate:14,.0f} "
                f"{ms(latencies, 0.5):8.1f} {ms(latencies, 0.99):8.1f}"
            )
        print(
            f"  {'server (HTTP)':30} {server_rate:14,.0f} "
            f"{ms(served.latencies, 0.5):8.1f} {ms(served.latencies, 0.99):8.1f}"
        )
        print(
            f"  ratio server / floor: {server_rate / floor_rate:.0%} "
            "(target >= 40% with p99 <= 50 ms)"
        )
        best = max([floor_rate, *(rate for _, rate, _ in shared)])
        print(
            f"  {args.terminals} closed-loop terminals wait {args.terminals} / rate on average "
            f"(Little's law): a mean of 50 ms needs {args.terminals / 0.05:,.0f} redemptions/s; "
            f"the best floor above did {best:,.0f}"
        )
        print()
        print("CPU per redemption and share of all CPUs over each phase:")
        print(
            f"  {'':30}"
            + "".join(
                f" {h:>16}" for h in ("API server", "bench client", "PostgreSQL", "other procs")
            )
        )
        print(cpu_line("server run", served.wall, count, served.cpu))
        print(cpu_line("floor run", floor_wall, len(floor_latencies), floor_cpu))
        print(
            "  ('other procs': anything else on the machine meanwhile, e.g. somebody's tests; "
            "'-': not measurable here)"
        )

        print()
        print("where the server's time goes:")
        profile = asyncio.run(_profiled(stack, world, args.profile, min(8, args.terminals)))
        report_profile(profile, args.profile)
        if args.profile_out:
            profile.dump_stats(args.profile_out)
            print(f"  profile saved to {args.profile_out} (read it with pstats)")
        return 0 if set(served.answers) == {"201"} else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--terminals", type=int, default=32, help="concurrent terminals")
    parser.add_argument("--redemptions", type=int, default=8_000, help="timed redemptions")
    parser.add_argument("--warmup", type=int, default=3, help="untimed redemptions per terminal")
    parser.add_argument("--workers", type=int, default=2, help="`coalition serve --workers`")
    parser.add_argument("--profile", type=int, default=400, help="redemptions profiled in-process")
    parser.add_argument("--profile-out", help="also save the profile to this file (pstats)")
    parser.add_argument(
        "--floor-pools",
        type=lambda text: [int(part) for part in text.split(",") if part],
        default=[2, 4, 8],
        help="also replay the floor with the terminals sharing this many connections "
        "(comma-separated sizes, each replay half as many redemptions; empty for none)",
    )
    args = parser.parse_args()
    if min(args.terminals, args.redemptions, args.workers, args.profile) < 1:
        parser.error("every count must be at least 1")

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
