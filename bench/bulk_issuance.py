"""Benchmark: bulk issuance of N targeted coupons, end to end, against a COPY baseline.

    .venv/bin/python bench/bulk_issuance.py --count 1000000

Starts from a fresh database: a new `coalition_bench_<random>` database on the server named by
DATABASE_URL (dropped at the end), or else a private embedded PostgreSQL in a temporary
directory (non-durable: fsync and synchronous commit off, as for the test suite; the output
says which). Migrates it, creates N customers (COPY) and an active campaign with room for N
coupons, then measures in the same run:

  baseline  COPY of N pre-generated coupon rows into an empty clone of the `coupon` table
            (`LIKE coupon INCLUDING ALL`: same columns, checks and indexes) as Python
            records (asyncpg encodes them as it sends), once more into a clone with the two
            foreign keys the table had before 0006, and once as a binary COPY stream encoded
            before the clock starts (what the server alone takes);
  issuance  the CSV of N customer ids uploaded (parse, unknown-customer check, the targets
            written as one row of arrays per chunk) and the `issue_batch` job run to the end
            (chunks: capacity, ids and codes, binary COPY of the coupons, the batch's cursor,
            figures), through the same service calls as `coalition issue --wait`;

and prints seconds, rows/s, the ratio to the baseline, and where the issuance time went.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from itertools import repeat
from pathlib import Path
from typing import Any

import asyncpg
from claim_storm import machine_cpu, postmaster_pid, self_cpu, tree_cpu

TARGET_SECONDS = 30.0


SERVER_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min"}


async def _configure(admin_url: str, settings: dict[str, str]) -> None:
    connection = await asyncpg.connect(_plain(admin_url))
    try:
        for name, value in settings.items():
            await connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    finally:
        await connection.close()


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextmanager
def fresh_database() -> Iterator[tuple[str, str, Path | None]]:
    """(SQLAlchemy URL of a fresh database, description of where it runs, the embedded
    server's data directory or None)."""
    from sqlalchemy.engine import make_url

    from coalition.platform.settings import to_asyncpg_url

    name = f"coalition_bench_{secrets.token_hex(4)}"
    server = os.environ.get("DATABASE_URL")
    stack = None
    tmp = None
    if server:
        server_admin = make_url(to_asyncpg_url(server)).set(database="postgres")
        admin_url = server_admin.render_as_string(hide_password=False)
        where = (
            f"PostgreSQL from DATABASE_URL ({server_admin.host}:{server_admin.port}), "
            f"database {name}"
        )
    else:
        from coalition.platform.embedded import EmbeddedStack

        tmp = tempfile.TemporaryDirectory(prefix="coalition-bench-")
        stack = EmbeddedStack(Path(tmp.name), durable=False)
        stack.start()
        # The embedded server's defaults (128 MB of shared buffers, a checkpoint every 1 GB of
        # WAL) suit a laptop, not a million-row load: size it like a small production server.
        asyncio.run(_configure(stack.admin_url, SERVER_SETTINGS))
        stack.stop()
        stack.start()
        admin_url = stack.admin_url
        where = (
            f"embedded PostgreSQL in {tmp.name}, non-durable (fsync, synchronous_commit and "
            "full_page_writes off), with "
            + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items())
        )

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(_plain(admin_url))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        yield url, where, stack.pgdata if stack is not None else None
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if stack is not None:
            stack.stop()
        if tmp is not None:
            tmp.cleanup()


class Meter:
    """CPU seconds over a phase: this process, PostgreSQL (embedded only), everybody else."""

    def __init__(self, pgdata: Path | None) -> None:
        self.pg_pid = postmaster_pid(pgdata)

    def read(self) -> tuple[float, float | None, float | None, float]:
        return self_cpu(), tree_cpu(self.pg_pid), machine_cpu(), time.perf_counter()

    def report(self, before: tuple[float, float | None, float | None, float]) -> str:
        after = self.read()
        wall = after[3] - before[3]
        ours = after[0] - before[0]
        pg = None if after[1] is None or before[1] is None else after[1] - before[1]
        machine = None if after[2] is None or before[2] is None else after[2] - before[2]
        capacity = wall * (os.cpu_count() or 1)
        parts = [f"CPU-s: this process {ours:.1f}"]
        parts.append("PostgreSQL " + ("-" if pg is None else f"{pg:.1f}"))
        if machine is not None:
            others = max(0.0, machine - ours - (pg or 0.0))
            parts.append(f"other processes {others:.1f} ({others / capacity:.0%} of the CPUs)")
        return ", ".join(parts)


class Timings:
    """Wall time per labelled phase (phases may nest: the report says which)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def phase(self, label: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] += time.perf_counter() - began
            self.calls[label] += 1


def sql_label(sql: str) -> str:
    head = " ".join(sql.split())[:60]
    for key, label in (
        ("FROM issue_batch_chunk WHERE batch_id = $1 AND last_row >", "fetch targets"),
        ("FROM coupon WHERE campaign_id", "per-customer holdings"),
        ("FROM claim_slot", "lock slots"),
        ("UPDATE claim_slot", "update slots"),
        ("WHERE NOT EXISTS (SELECT 1 FROM customer c", "unknown customers"),
    ):
        if key in " ".join(sql.split()):
            return label
    return head


class TimedDriver:
    """An asyncpg connection whose bulk calls are timed (bench instrumentation only)."""

    def __init__(self, driver: Any, timings: Timings) -> None:
        self._driver = driver
        self._timings = timings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)

    async def fetch(self, sql: str, *args: Any) -> Any:
        with self._timings.phase("db: " + sql_label(sql)):
            return await self._driver.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        with self._timings.phase("db: " + sql_label(sql)):
            return await self._driver.execute(sql, *args)

    async def executemany(self, sql: str, rows: Any) -> Any:
        with self._timings.phase("db: " + sql_label(sql)):
            return await self._driver.executemany(sql, rows)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        with self._timings.phase("db: " + sql_label(sql)):
            return await self._driver.fetchrow(sql, *args)

    async def copy_to_table(self, table: str, **kwargs: Any) -> Any:
        with self._timings.phase(f"db: COPY {table}"):
            return await self._driver.copy_to_table(table, **kwargs)

    async def copy_records_to_table(self, table: str, **kwargs: Any) -> Any:
        label = f"db: COPY {table}"
        records = kwargs.pop("records")
        with self._timings.phase(f"py: build {table} rows"):
            records = list(records)
        with self._timings.phase(label):
            return await self._driver.copy_records_to_table(table, records=records, **kwargs)


def instrument(timings: Timings) -> None:
    from coalition.campaigns.services import issuance
    from coalition.platform import pgcopy

    original_driver = issuance.driver_connection
    original_codes = issuance.codes_packed
    original_ids = issuance.uuid7_packed
    original_parse = issuance.parse_upload
    original_encode = pgcopy.encode_rows

    async def driver(session: Any) -> Any:
        return TimedDriver(await original_driver(session), timings)

    def codes_packed(n: int) -> bytes:
        with timings.phase("py: codes"):
            return original_codes(n)

    def uuid7_packed(n: int) -> bytes:
        with timings.phase("py: uuid7 ids"):
            return original_ids(n)

    def parse_upload(*args: Any, **kwargs: Any) -> Any:
        with timings.phase("py: parse CSV"):
            return original_parse(*args, **kwargs)

    def encode_rows(*args: Any, **kwargs: Any) -> Any:
        with timings.phase("py: encode coupon rows (binary)"):
            return original_encode(*args, **kwargs)

    issuance.driver_connection = driver  # type: ignore[assignment]
    issuance.codes_packed = codes_packed  # type: ignore[assignment]
    issuance.uuid7_packed = uuid7_packed  # type: ignore[assignment]
    issuance.parse_upload = parse_upload  # type: ignore[assignment]
    pgcopy.encode_rows = encode_rows  # type: ignore[assignment]


async def setup(database_url: str, count: int) -> tuple[uuid.UUID, list[str]]:
    """Two organizations, `count` customers (COPY), an active campaign with room for all."""
    from bench_campaign import running_campaign

    from coalition.campaigns.domain import Offer
    from coalition.platform.db import make_engine, make_sessionmaker
    from coalition.platform.settings import Settings

    engine = make_engine(Settings(database_url=database_url), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            campaign_id = await running_campaign(
                session,
                name="Bench campaign",
                quantity=count,
                budget=count * 500,
                offer=Offer(
                    kind="amount_off", currency="CNY", value=500, valid_days_after_claim=30
                ),
                days=60,
            )
            await session.commit()
    finally:
        await engine.dispose()

    ids = [str(uuid.uuid4()) for _ in range(count)]
    connection = await asyncpg.connect(_plain(database_url))
    try:
        now = time.time()
        from datetime import UTC, datetime

        stamp = datetime.fromtimestamp(now, UTC)
        await connection.copy_records_to_table(
            "customer",
            records=(
                (i, secrets.token_hex(32), "*******0000", 1 + n % 7, ["bench"], True, stamp, stamp)
                for n, i in enumerate(ids)
            ),
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
        await connection.execute("VACUUM ANALYZE customer")
    finally:
        await connection.close()
    return campaign_id, ids


async def baseline(
    database_url: str, campaign_id: uuid.UUID, customers: list[str]
) -> dict[str, float]:
    """COPY of N pre-generated coupon rows into empty clones of `coupon` (timed: the COPY):
    as Python records (asyncpg encodes them while it sends), again with the two old foreign
    keys, and as a binary stream encoded beforehand (the server's part alone)."""
    from coalition.campaigns.services.issuance import (
        COUPON_COLUMNS,
        codes_packed,
        unpack_codes,
        uuid7_packed,
    )
    from coalition.platform import pgcopy
    from coalition.platform.db import utcnow

    count = len(customers)
    now = utcnow()
    until = now + timedelta(days=30)
    batch_id = uuid.uuid4()
    ids = uuid7_packed(count)
    new_codes = codes_packed(count)
    slots = [n % 64 for n in range(count)]
    rows = list(
        zip(
            ids.hex("\n", 16).split("\n") if count else [],
            repeat(campaign_id),
            unpack_codes(new_codes),
            customers,
            repeat(1),
            repeat("issued"),
            slots,
            repeat(500),
            repeat([300, 200]),
            repeat(now),
            repeat(until),
            repeat(now),
            repeat(batch_id),
            strict=False,
        )
    )
    stream = pgcopy.encode_rows(
        count,
        [
            pgcopy.Packed(16, ids),
            pgcopy.Const(campaign_id.bytes),
            pgcopy.Packed(len(new_codes) // max(count, 1), new_codes),
            pgcopy.Packed(16, b"".join(uuid.UUID(c).bytes for c in customers)),
            pgcopy.Const(pgcopy.int4(1)),
            pgcopy.Const(pgcopy.text("issued")),
            pgcopy.Packed(4, pgcopy.packed_int4(slots)),
            pgcopy.Const(pgcopy.int8(500)),
            pgcopy.Const(pgcopy.int8_array([300, 200])),
            pgcopy.Const(pgcopy.timestamptz(now)),
            pgcopy.Const(pgcopy.timestamptz(until)),
            pgcopy.Const(pgcopy.timestamptz(now)),
            pgcopy.Const(batch_id.bytes),
        ],
    )
    results: dict[str, float] = {}
    connection = await asyncpg.connect(_plain(database_url))
    try:
        for label, table, with_fks in (
            ("records", "bench_coupon", False),
            ("records + FKs", "bench_coupon_fk", True),
            ("binary", "bench_coupon_binary", False),
        ):
            await connection.execute(f"CREATE TABLE {table} (LIKE coupon INCLUDING ALL)")
            if with_fks:
                await connection.execute(
                    f"ALTER TABLE {table} "
                    "ADD FOREIGN KEY (campaign_id) REFERENCES campaign (id), "
                    "ADD FOREIGN KEY (customer_id) REFERENCES customer (id)"
                )
            await connection.execute("CHECKPOINT")
            began = time.perf_counter()
            async with connection.transaction():
                if label == "binary":
                    await connection.copy_to_table(
                        table, source=stream, columns=COUPON_COLUMNS, format="binary"
                    )
                else:
                    await connection.copy_records_to_table(
                        table, records=rows, columns=COUPON_COLUMNS
                    )
            results[label] = time.perf_counter() - began
            await connection.execute(f"DROP TABLE {table}")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return results


async def issuance_run(
    database_url: str,
    campaign_id: uuid.UUID,
    body: list[bytes],
    chunk_size: int,
    timings: Timings,
) -> tuple[float, float, Any]:
    from coalition.campaigns.services import issuance
    from coalition.platform.db import make_engine, make_sessionmaker
    from coalition.platform.settings import Settings

    settings = Settings(database_url=database_url)
    engine = make_engine(settings, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            began = time.perf_counter()
            with timings.phase("upload (total)"):
                upload = await issuance.create_operator_issuance(
                    session, settings, campaign_id, body.pop()
                )
            uploaded = time.perf_counter() - began
            batch_id = upload.batch.id
            # The upload is an API request and the job runs in a worker: the job's process
            # does not hold the parsed file (a big heap makes every garbage collection slow).
            del upload
            gc.collect()
            chunks = 0

            def progress(_: Any) -> None:
                nonlocal chunks
                chunks += 1

            with timings.phase("job (total)"):
                result = await issuance.issue_batch(
                    session, batch_id, chunk_size=chunk_size, on_progress=progress
                )
            total = time.perf_counter() - began
            timings.calls["job (total)"] = chunks
    finally:
        await engine.dispose()
    return uploaded, total, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="coupons to issue")
    parser.add_argument("--chunk-size", type=int, default=None, help="targets per transaction")
    args = parser.parse_args()
    count: int = args.count

    import structlog

    from coalition.campaigns.services import issuance
    from coalition.platform import migrate

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    chunk_size = args.chunk_size or issuance.CHUNK_SIZE
    print(f"bulk issuance benchmark: {count:,} targeted coupons, chunks of {chunk_size:,}")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with fresh_database() as (database_url, where, pgdata):
        meter = Meter(pgdata)
        print(f"database: {where}")
        began = time.perf_counter()
        migrate.upgrade(database_url)
        campaign_id, customers = asyncio.run(setup(database_url, count))
        csv_body = ("customer_id\n" + "\n".join(customers) + "\n").encode()
        print(
            f"setup: migrated, {count:,} customers, active campaign, CSV of "
            f"{len(csv_body) / 2**20:.1f} MiB ({time.perf_counter() - began:.1f} s, not timed)"
        )

        before = meter.read()
        copies = asyncio.run(baseline(database_url, campaign_id, customers))
        baseline_cpu = meter.report(before)
        base = copies["records"]
        with_fks = copies["records + FKs"]
        binary = copies["binary"]
        print()
        print(
            f"baseline  COPY {count:,} rows, same indexes:      {base:7.2f} s  "
            f"{count / base:>11,.0f} rows/s"
        )
        print(
            f"          COPY {count:,} rows, + the 2 old FKs:   {with_fks:7.2f} s  "
            f"{count / with_fks:>11,.0f} rows/s"
        )
        print(
            f"          COPY {count:,} rows pre-encoded binary: {binary:7.2f} s  "
            f"{count / binary:>11,.0f} rows/s"
        )
        print(f"          ({baseline_cpu}, the three COPYs)")

        del customers
        gc.collect()
        timings = Timings()
        instrument(timings)
        body, csv_body = [csv_body], b""
        before = meter.read()
        uploaded, total, result = asyncio.run(
            issuance_run(database_url, campaign_id, body, chunk_size, timings)
        )
        issuance_cpu = meter.report(before)
        assert result.status == "completed" and result.issued == count, result
        print(
            f"issuance  end to end (upload + job):      {total:7.2f} s  "
            f"{count / total:>11,.0f} rows/s"
        )
        print(f"          of which upload {uploaded:.2f} s, job {total - uploaded:.2f} s")
        print(f"          ({issuance_cpu})")
        print(
            f"ratio     issuance / baseline (same indexes) = {total / base:.2f}x, "
            f"/ baseline with the old FKs = {total / with_fks:.2f}x, "
            f"/ pre-encoded binary COPY = {total / binary:.2f}x"
        )
        verdict = "met" if total <= TARGET_SECONDS else "MISSED"
        print(
            f"target    <= {TARGET_SECONDS:.0f} s at 1,000,000: {verdict}"
            + (f" (by {total - TARGET_SECONDS:.1f} s)" if total > TARGET_SECONDS else "")
            + ("" if count == 1_000_000 else f" (this run: {count:,})")
        )
        print()
        print("where the issuance time went (wall seconds; db: = waiting on PostgreSQL):")
        for label, seconds in sorted(timings.seconds.items(), key=lambda kv: -kv[1]):
            print(f"  {label:<34} {seconds:7.2f} s  ({timings.calls[label]} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
