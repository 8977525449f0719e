"""Benchmark: close the statements over N redemptions across 200 organizations, against the
bare aggregate SQL over the same rows.

    .venv/bin/python bench/settle.py --redemptions 1000000

Starts from a fresh database (a new `coalition_bench_<random>` database on the server named by
DATABASE_URL, dropped at the end, or else a private embedded PostgreSQL in a temporary
directory; the output says which), migrates it, and writes in bulk, in the shape the real
redemption path writes them: 200 organizations (a carrier and 199 merchants with a store
each), 100 weekly joint campaigns (the carrier and two merchants, 50/30/20 %, a 1 % fee paid
by the redeeming merchant), N coupons and N redemptions at the merchants' stores over the two
last full weeks (Asia/Shanghai), each with its frozen funding and its ledger entry (the
postings `settlement.domain.redemption_lines` makes), and full reversals of 1 % of the first
week's redemptions during the second week. The load skips triggers (`session_replication_role
= replica`), so the balance of every entry is checked afterwards with one query, and what the
trigger on `ledger_posting` queues for statements (`statement_pending`) is queued afterwards
by the trigger's own statement (migration 0015's `queue_postings`) over every posting.

Then, in the same run:

  baseline  the bare aggregate: one SQL query summing every organization's postings per
            week, campaign and store (what the statements' lines say, without writing them);
  close     `statements.close_due`, as the scheduled job runs it: finds the series with
            entries not yet in a statement, and closes every ended week of each (links every
            entry to its statement, computes the lines, sums the figures), one transaction
            per series;

and prints seconds, rows/s, the ratio, checks (every entry in exactly one statement per
organization, statement nets equal to the ledger, nets summing to zero) and the CPU used by
this process, PostgreSQL and the other processes on the machine during each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from bulk_issuance import fresh_database

QUEUE_TRIGGER_0015 = importlib.import_module(
    "coalition.migrations.versions.0015_statement_pending_series"
)

ORGS = 200
CAMPAIGNS = 100
CHUNK = 50_000
REVERSED_SHARE = 0.01
TIMEZONE = "Asia/Shanghai"


# --- CPU accounting (Linux /proc; None elsewhere) ---------------------------------------------


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_cpu() -> float | None:
    """CPU seconds all CPUs spent busy so far."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / _ticks()


def tree_cpu(root: int | None) -> float | None:
    """CPU seconds of a process and its descendants (reaped children included)."""
    if root is None or not Path("/proc").is_dir():
        return None
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / _ticks())
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


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Phase:
    label: str
    seconds: float
    own: float
    postgres: float | None
    machine: float | None

    @property
    def others(self) -> float | None:
        if self.machine is None or self.postgres is None:
            return None
        return max(0.0, self.machine - self.own - self.postgres)

    def cpu(self) -> str:
        def fmt(value: float | None) -> str:
            return "   n/a" if value is None else f"{value:6.1f}"

        cores = self.seconds * (os.cpu_count() or 1)
        if self.postgres is None and self.machine is not None and self.seconds > 0:
            # The server's processes are not visible from here (another PID namespace):
            # PostgreSQL and everything else on the machine, together.
            rest = max(0.0, self.machine - self.own)
            return (
                f"CPU s: this process {fmt(self.own)}, PostgreSQL + other processes "
                f"{fmt(rest)}  (the machine was {self.machine / cores:.0%} busy)"
            )
        share = ""
        if self.others is not None and self.seconds > 0:
            share = f"  (others used {self.others / cores:.0%}"
            share += " of the machine)"
        return (
            f"CPU s: this process {fmt(self.own)}, PostgreSQL {fmt(self.postgres)}, "
            f"other processes {fmt(self.others)}{share}"
        )


class Meter:
    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster

    def measure(self, label: str) -> _Measuring:
        return _Measuring(self, label)


class _Measuring:
    def __init__(self, meter: Meter, label: str) -> None:
        self.meter, self.label = meter, label
        self.phase: Phase | None = None

    def __enter__(self) -> _Measuring:
        self.began = time.perf_counter()
        self.own, self.pg, self.machine = (
            self_cpu(),
            tree_cpu(self.meter.postmaster),
            machine_cpu(),
        )
        return self

    def __exit__(self, *_: Any) -> None:
        pg, machine = tree_cpu(self.meter.postmaster), machine_cpu()
        self.phase = Phase(
            self.label,
            time.perf_counter() - self.began,
            self_cpu() - self.own,
            None if pg is None or self.pg is None else pg - self.pg,
            None if machine is None or self.machine is None else machine - self.machine,
        )


# --- setup ------------------------------------------------------------------------------------


@dataclass
class World:
    carrier: uuid.UUID
    merchants: list[uuid.UUID]
    stores: dict[uuid.UUID, uuid.UUID]  # merchant -> its store
    campaigns: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]  # (campaign, merchant a, merchant b)
    accounts: dict[tuple[uuid.UUID, str], uuid.UUID]


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def setup_world(database_url: str, weeks_start: datetime) -> World:
    from coalition.campaigns.domain import Offer, offer_to_json
    from coalition.campaigns.models import Campaign, CampaignParticipant
    from coalition.merchants.models import INDUSTRIES, Store
    from coalition.merchants.services import organizations
    from coalition.platform.db import make_engine, make_sessionmaker
    from coalition.platform.settings import Settings
    from coalition.settlement.models import ACCOUNT_PURPOSES, LedgerAccount

    engine = make_engine(Settings(database_url=database_url), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            carrier = await organizations.create_organization(
                session, kind="carrier", name="Bench Mobile 联合移动", industry="telecom"
            )
            merchants = []
            for n in range(ORGS - 1):
                org = await organizations.create_organization(
                    session,
                    kind="merchant",
                    name=f"商户 {n:03d} Merchant",
                    industry=INDUSTRIES[1 + n % (len(INDUSTRIES) - 1)],
                )
                merchants.append(org)
            await session.flush()
            stores = {}
            for org in merchants:
                store = Store(
                    org_id=org.id, name=f"{org.name} 一号店", address="1 Road", city="上海"
                )
                session.add(store)
                await session.flush()
                stores[org.id] = store.id
            offer = offer_to_json(Offer(kind="amount_off", currency="CNY", value=5_000))
            campaigns = []
            for c in range(CAMPAIGNS):
                a, b = merchants[c], merchants[(c + CAMPAIGNS) % len(merchants)]
                campaign = Campaign(
                    owner_org_id=carrier.id,
                    name=f"联合活动 {c:03d}",
                    status="active",
                    currency="CNY",
                    timezone=TIMEZONE,
                    starts_at=weeks_start - timedelta(days=1),
                    ends_at=weeks_start + timedelta(days=60),
                    offer=offer,
                    total_quantity=10_000_000,
                    total_budget=10**11,
                    fee_bp=100,
                    settlement_cycle="weekly",
                    terms_version=1,
                )
                session.add(campaign)
                await session.flush()
                for position, (org_id, share) in enumerate(
                    ((carrier.id, 5000), (a.id, 3000), (b.id, 2000))
                ):
                    session.add(
                        CampaignParticipant(
                            campaign_id=campaign.id,
                            org_id=org_id,
                            position=position,
                            share_bp=share,
                            accepted_version=1,
                        )
                    )
                campaigns.append((campaign.id, a.id, b.id))
            accounts = {}
            for org_id in [carrier.id, *(m.id for m in merchants)]:
                for purpose in ACCOUNT_PURPOSES:
                    account = LedgerAccount(org_id=org_id, purpose=purpose, currency="CNY")
                    session.add(account)
                    accounts[(org_id, purpose)] = account.id
            await session.commit()
            return World(carrier.id, [m.id for m in merchants], stores, campaigns, accounts)
    finally:
        await engine.dispose()


@dataclass
class Shape:
    """What one (campaign, redeeming merchant, discount) writes: the frozen funding and the
    postings of its redemption entry and of a full reversal."""

    funding_json: str
    lines: list[tuple[uuid.UUID, str, int]]
    reversal_lines: list[tuple[uuid.UUID, str, int]]


def shapes(world: World, discounts: list[int]) -> dict[tuple[int, int, int], Shape]:
    from coalition.campaigns.services.redemptions import funding_to_json
    from coalition.settlement.domain import (
        FundingShare,
        RedemptionFunding,
        redemption_lines,
        reversal_lines,
    )

    made = {}
    for c, (_, a, b) in enumerate(world.campaigns):
        for side, redeemer in enumerate((a, b)):
            for discount in discounts:
                funding = RedemptionFunding(
                    discount=discount,
                    currency="CNY",
                    redeeming_org_id=redeemer,
                    owner_org_id=world.carrier,
                    carrier_org_id=world.carrier,
                    funders=(
                        FundingShare(world.carrier, 5000),
                        FundingShare(a, 3000),
                        FundingShare(b, 2000),
                    ),
                    fee_bp=100,
                )
                made[(c, side, discount)] = Shape(
                    json.dumps(funding_to_json(funding)),
                    [tuple(line) for line in redemption_lines(funding)],  # type: ignore[misc]
                    [
                        tuple(line)  # type: ignore[misc]
                        for line in reversal_lines(
                            funding, reversed_before=0, reversing_now=discount
                        )
                    ],
                )
    return made


COUPON_COLUMNS = (
    "id", "campaign_id", "code", "status", "reserved_amount", "funder_reserved",
    "valid_from", "valid_until", "issued_at", "redeemed_at",
)  # fmt: skip
REDEMPTION_COLUMNS = (
    "id", "campaign_id", "coupon_id", "org_id", "store_id", "channel", "currency",
    "basket_amount", "discount", "funding", "status", "refunded_amount", "discount_reversed",
    "redeemed_at", "reversed_at",
)  # fmt: skip
REVERSAL_COLUMNS = (
    "id", "redemption_id", "org_id", "refund_amount", "discount_reversed", "full", "reason",
    "created_at",
)  # fmt: skip
ENTRY_COLUMNS = (
    "id", "idempotency_key", "kind", "occurred_at", "campaign_id", "redemption_id", "created_at",
)  # fmt: skip
POSTING_COLUMNS = ("id", "entry_id", "account_id", "org_id", "amount", "currency")


def chunks(
    world: World, shapes_by_key: dict[tuple[int, int, int], Shape], discounts: list[int],
    count: int, weeks_start: datetime, rng: random.Random,
) -> Iterator[dict[str, list[tuple[Any, ...]]]]:  # fmt: skip
    from coalition.campaigns.services.issuance import codes_batch, uuid4_batch

    week = timedelta(days=7)
    for first in range(0, count, CHUNK):
        n = min(CHUNK, count - first)
        ids = uuid4_batch(n * 3)
        codes = codes_batch(n)
        rows: dict[str, list[tuple[Any, ...]]] = {
            "coupon": [], "redemption": [], "redemption_reversal": [], "journal_entry": [],
            "ledger_posting": [],
        }  # fmt: skip
        postings_needed = 0
        planned = []
        for i in range(n):
            c = rng.randrange(CAMPAIGNS)
            side = rng.randrange(2)
            discount = rng.choice(discounts)
            in_first_week = (first + i) % 2 == 0
            at = (
                weeks_start
                + (timedelta(0) if in_first_week else week)
                + timedelta(seconds=rng.randrange(7 * 86_400))
            )
            reversed_ = in_first_week and rng.random() < REVERSED_SHARE
            shape = shapes_by_key[(c, side, discount)]
            postings_needed += len(shape.lines) + (len(shape.reversal_lines) if reversed_ else 0)
            planned.append((c, side, discount, at, reversed_, shape))
        posting_ids = iter(uuid4_batch(postings_needed))
        for i, (c, side, discount, at, reversed_, shape) in enumerate(planned):
            coupon_id, redemption_id, entry_id = ids[3 * i], ids[3 * i + 1], ids[3 * i + 2]
            campaign_id, a, b = world.campaigns[c]
            redeemer = (a, b)[side]
            reversed_at = at + week if reversed_ else None
            rows["coupon"].append(
                (coupon_id, campaign_id, codes[i], "claimed" if reversed_ else "redeemed", 0, [],
                 at - timedelta(days=1), at + timedelta(days=30), at - timedelta(days=1),
                 None if reversed_ else at)
            )  # fmt: skip
            rows["redemption"].append(
                (redemption_id, campaign_id, coupon_id, redeemer, world.stores[redeemer], "pos",
                 "CNY", discount * 5, discount, shape.funding_json,
                 "reversed" if reversed_ else "completed", discount * 5 if reversed_ else 0,
                 discount if reversed_ else 0, at, reversed_at)
            )  # fmt: skip
            rows["journal_entry"].append(
                (entry_id, f"redemption:{uuid.UUID(redemption_id)}", "redemption", at,
                 campaign_id, redemption_id, at)
            )  # fmt: skip
            for org_id, purpose, amount in shape.lines:
                rows["ledger_posting"].append(
                    (next(posting_ids), entry_id, world.accounts[(org_id, purpose)], org_id,
                     amount, "CNY")
                )  # fmt: skip
            if reversed_at is not None:
                reversal_id = uuid.uuid4()
                reversal_entry = uuid.uuid4()
                rows["redemption_reversal"].append(
                    (reversal_id, redemption_id, redeemer, discount * 5, discount, True,
                     "bench refund", reversed_at)
                )  # fmt: skip
                rows["journal_entry"].append(
                    (reversal_entry, f"reversal:{reversal_id}", "reversal", reversed_at,
                     campaign_id, redemption_id, reversed_at)
                )  # fmt: skip
                for org_id, purpose, amount in shape.reversal_lines:
                    rows["ledger_posting"].append(
                        (next(posting_ids), reversal_entry, world.accounts[(org_id, purpose)],
                         org_id, amount, "CNY")
                    )  # fmt: skip
        yield rows


async def queue_for_statements(connection: asyncpg.Connection) -> int:
    """Queue for statements what the trigger on `ledger_posting` queues (triggers are off
    during the load): its own statement, run over every posting at once."""
    status = await connection.execute(QUEUE_TRIGGER_0015.queue_postings("ledger_posting"))
    return int(status.split()[-1])


async def load(
    database_url: str, world: World, count: int, weeks_start: datetime, seed: int
) -> dict[str, int]:
    rng = random.Random(seed)
    discounts = list(range(500, 5_001, 50))
    shapes_by_key = shapes(world, discounts)
    columns = {
        "coupon": COUPON_COLUMNS,
        "redemption": REDEMPTION_COLUMNS,
        "redemption_reversal": REVERSAL_COLUMNS,
        "journal_entry": ENTRY_COLUMNS,
        "ledger_posting": POSTING_COLUMNS,
    }
    totals = dict.fromkeys(columns, 0)
    connection = await asyncpg.connect(plain(database_url))
    try:
        await connection.execute("SET session_replication_role = replica")
        for rows in chunks(world, shapes_by_key, discounts, count, weeks_start, rng):
            async with connection.transaction():
                for table, records in rows.items():
                    if records:
                        await connection.copy_records_to_table(
                            table, records=records, columns=columns[table]
                        )
                        totals[table] += len(records)
        await connection.execute("SET session_replication_role = origin")
        unbalanced = await connection.fetchval(
            "SELECT count(*) FROM (SELECT entry_id FROM ledger_posting GROUP BY entry_id "
            "HAVING sum(amount) <> 0 OR count(*) < 2) bad"
        )
        if unbalanced:
            raise SystemExit(f"{unbalanced} unbalanced entries were loaded")
        totals["statement_pending"] = await queue_for_statements(connection)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return totals


async def backend_pid(database_url: str) -> int:
    connection = await asyncpg.connect(plain(database_url))
    try:
        return int(await connection.fetchval("SELECT pg_backend_pid()"))
    finally:
        await connection.close()


def postmaster_pid(database_url: str) -> int | None:
    """The PostgreSQL server's main process, if it runs on this machine."""
    backend = asyncio.run(backend_pid(database_url))
    try:
        stat = Path(f"/proc/{backend}/stat").read_text()
    except OSError:
        return None  # not on this machine
    return int(stat[stat.rfind(")") + 2 :].split()[1])


# --- the two measured runs --------------------------------------------------------------------

BASELINE = """
    SELECT p.org_id, p.currency, date_trunc('week', e.occurred_at AT TIME ZONE $1) AS week,
        e.campaign_id, r.store_id,
        count(DISTINCT e.id) FILTER (WHERE e.kind = 'redemption') AS redemptions,
        count(DISTINCT e.id) FILTER (WHERE e.kind = 'reversal') AS reversals,
        sum(p.amount) FILTER (WHERE e.kind = 'redemption' AND a.purpose = 'partner_receivable'),
        sum(p.amount) FILTER (WHERE e.kind = 'redemption' AND a.purpose = 'partner_payable'),
        sum(p.amount) FILTER (WHERE e.kind = 'redemption' AND a.purpose = 'fee_payable'),
        sum(p.amount) FILTER (WHERE e.kind = 'redemption' AND a.purpose = 'fee_revenue'),
        sum(p.amount) FILTER (WHERE e.kind = 'reversal'),
        sum(p.amount) AS net
    FROM ledger_posting p
    JOIN journal_entry e ON e.id = p.entry_id
    JOIN ledger_account a ON a.id = p.account_id
    LEFT JOIN redemption r ON r.id = e.redemption_id
    WHERE e.occurred_at < $2
    GROUP BY 1, 2, 3, 4, 5
"""


async def baseline(database_url: str, now: datetime) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(plain(database_url))
    try:
        return list(await connection.fetch(BASELINE, TIMEZONE, now))
    finally:
        await connection.close()


async def close_all(database_url: str, now: datetime) -> int:
    from coalition.platform.db import make_engine, make_sessionmaker
    from coalition.platform.settings import Settings
    from coalition.settlement.services import statements

    engine = make_engine(Settings(database_url=database_url), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            return await statements.close_due(session, now)
    finally:
        await engine.dispose()


async def checks(
    database_url: str, baseline_rows: list[asyncpg.Record]
) -> list[tuple[str, bool, str]]:
    connection = await asyncpg.connect(plain(database_url))
    try:
        pairs = await connection.fetchval(
            "SELECT count(*) FROM "
            "(SELECT DISTINCT entry_id, org_id, currency FROM ledger_posting) pairs"
        )
        links = await connection.fetchval("SELECT count(*) FROM statement_entry")
        nets = {
            r["org_id"]: int(r["net"])
            for r in await connection.fetch(
                "SELECT org_id, sum(net) AS net FROM statement GROUP BY org_id"
            )
        }
        total = await connection.fetchval("SELECT coalesce(sum(net), 0) FROM statement")
        line_mismatch = await connection.fetchval(
            "SELECT count(*) FROM statement s WHERE s.net <> "
            "(SELECT coalesce(sum(net), 0) FROM statement_line l WHERE l.statement_id = s.id)"
        )
        statuses = await connection.fetch("SELECT status, count(*) FROM statement GROUP BY 1")
    finally:
        await connection.close()
    ledger: dict[Any, int] = {}
    for row in baseline_rows:
        ledger[row["org_id"]] = ledger.get(row["org_id"], 0) + int(row["net"])
    linked = f"{links:,} links, {pairs:,} entry-org pairs"
    return [
        ("every entry in exactly one statement per org", links == pairs, linked),
        ("statement nets = the bare aggregate, per org", nets == ledger, f"{len(nets)} orgs"),
        ("statement nets sum to zero", total == 0, f"sum {total}"),
        ("statement net = sum of its lines", line_mismatch == 0, f"{line_mismatch} differ"),
        ("statuses", True, ", ".join(f"{r['status']} x {r['count']}" for r in statuses)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redemptions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    count: int = args.redemptions

    import structlog

    from coalition.platform import migrate
    from coalition.settlement.domain import period_containing

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    now = datetime.now(UTC)
    this_week = period_containing(now, "weekly", TIMEZONE)
    weeks_start = this_week.start - timedelta(days=14)  # the two last full weeks
    print(
        f"settlement benchmark: {count:,} redemptions, {ORGS} organizations, "
        f"{CAMPAIGNS} weekly campaigns, weeks from {weeks_start.isoformat()}"
    )
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with fresh_database() as (database_url, where, _pgdata):
        print(f"database: {where}")
        began = time.perf_counter()
        migrate.upgrade(database_url)
        world = asyncio.run(setup_world(database_url, weeks_start))
        loaded = asyncio.run(load(database_url, world, count, weeks_start, args.seed))
        print(
            "setup (not timed): "
            + ", ".join(f"{table} {rows:,}" for table, rows in loaded.items())
            + f" ({time.perf_counter() - began:.1f} s, balance of every entry checked)"
        )
        entries = loaded["journal_entry"]
        postings = loaded["ledger_posting"]
        meter = Meter(postmaster_pid(database_url))

        with meter.measure("baseline") as measured_baseline:
            baseline_rows = asyncio.run(baseline(database_url, this_week.start))
        with meter.measure("close") as measured_close:
            closed = asyncio.run(close_all(database_url, now))
        base, close = measured_baseline.phase, measured_close.phase
        assert base is not None and close is not None

        print()
        print(f"{'':34}{'seconds':>9}{'entries/s':>13}{'postings/s':>13}")
        for label, phase in (
            (f"baseline: bare aggregate ({len(baseline_rows):,} groups)", base),
            (f"close: {closed} statements", close),
        ):
            print(
                f"{label:34}{phase.seconds:9.2f}{entries / phase.seconds:13,.0f}"
                f"{postings / phase.seconds:13,.0f}"
            )
        print(f"ratio close / baseline: {close.seconds / base.seconds:.1f}x")
        print(f"  baseline {base.cpu()}")
        print(f"  close    {close.cpu()}")
        print()
        failed = False
        for label, ok, detail in asyncio.run(checks(database_url, baseline_rows)):
            print(f"check: {label}: {'ok' if ok else 'FAILED'} ({detail})")
            failed = failed or not ok
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
