"""Bulk issuance: CSV and audience uploads with per-line error reports, the chunked job (run
directly, by a real arq worker, killed and resumed), capacity and per-customer limits,
tenancy, and the `coalition issue` command."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns import codes
from coalition.campaigns.models import Campaign as CampaignRow
from coalition.campaigns.models import (
    CampaignDailyStat,
    ClaimSlot,
    Coupon,
    Customer,
    IssueBatch,
)
from coalition.campaigns.services import issuance
from coalition.platform.db import SessionMaker
from coalition.platform.jobs import JobContext, JobOutbox, JobRegistry, job_session
from coalition.platform.settings import Settings
from coalition.platform.worker import build_worker, worker_options
from tests.integration.campaign_helpers import running_campaign as shared_running_campaign
from tests.integration.conftest import World, auth_headers

Client = AsyncTestClient[Litestar]
OWNER = "marketing@carrier.test"
ROOT = Path(__file__).resolve().parents[2]


# --- helpers ---------------------------------------------------------------------------------


async def running_campaign(
    session: AsyncSession, world: World, *, quantity: int = 1000, **fields: Any
) -> CampaignRow:
    """An active carrier + café campaign with room for bulk batches."""
    fields.setdefault("budget", 10_000_000)
    return await shared_running_campaign(session, world, quantity=quantity, **fields)


async def make_customers(
    session: AsyncSession, count: int, *, hashes: list[str] | None = None, **attrs: Any
) -> list[Customer]:
    rows = [
        Customer(
            external_id_hash=hashes[i] if hashes else secrets.token_hex(32),
            phone_hint="*******0000",
            **attrs,
        )
        for i in range(count)
    ]
    session.add_all(rows)
    await session.commit()
    return rows


def csv_of(*lines: str, header: str = "customer_id") -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


async def upload(
    client: Client, headers: dict[str, str], campaign_id: uuid.UUID, body: bytes, **params: str
) -> Any:
    return await client.post(
        f"/api/v1/campaigns/{campaign_id}/issuances",
        content=body,
        params=params,
        headers={**headers, "content-type": "text/csv"},
    )


async def coupons_of(session: AsyncSession, campaign_id: uuid.UUID) -> list[Coupon]:
    rows = await session.execute(
        select(Coupon)
        .where(col(Coupon.campaign_id) == campaign_id)
        .execution_options(populate_existing=True)
    )
    return list(rows.scalars().all())


async def batch_row(session: AsyncSession, batch_id: uuid.UUID | str) -> IssueBatch:
    return await session.get_one(IssueBatch, uuid.UUID(str(batch_id)), populate_existing=True)


async def assert_exactly_once(
    session: AsyncSession, batch_id: uuid.UUID, campaign_id: uuid.UUID, expected: int
) -> list[Coupon]:
    """Every target has exactly one coupon (its own customer's), no coupon without a target."""
    made = await coupons_of(session, campaign_id)
    mine = [c for c in made if c.batch_id == batch_id]
    assert len(mine) == expected
    assert len({c.code for c in mine}) == expected
    assert all(codes.parse(c.code) == c.code for c in mine)
    assert len({c.customer_id for c in mine}) == expected  # no customer twice
    targets = await targets_of(session, batch_id)
    # no gap: every target's customer got this batch's coupon, and nobody else did
    assert {customer for _, customer in targets} == {c.customer_id for c in mine}
    batch = await batch_row(session, batch_id)
    assert batch.done_through_row == max((row for row, _ in targets), default=0)
    return mine


async def targets_of(session: AsyncSession, batch_id: uuid.UUID) -> list[tuple[int, uuid.UUID]]:
    """The batch's stored targets (line number, customer), in line order."""
    rows = await session.execute(
        text(
            "SELECT u.row_number, u.customer_id FROM issue_batch_chunk k, "
            "unnest(k.row_numbers, k.customer_ids) AS u(row_number, customer_id) "
            "WHERE k.batch_id = :b ORDER BY u.row_number"
        ),
        {"b": batch_id},
    )
    return [(int(r[0]), r[1]) for r in rows.all()]


async def slot_sums(session: AsyncSession, campaign_id: uuid.UUID) -> tuple[int, int, int]:
    row = (
        await session.execute(
            text(
                "SELECT sum(remaining_quantity), sum(remaining_budget), "
                "min(least(remaining_quantity, remaining_budget)) "
                "FROM claim_slot WHERE campaign_id = :c"
            ),
            {"c": campaign_id},
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


# --- codes in bulk (no I/O) ------------------------------------------------------------------


def test_codes_batch_makes_valid_distinct_codes_in_the_claim_format() -> None:
    made = issuance.codes_batch(50_000)
    assert len(made) == 50_000 and len(set(made)) == 50_000
    for code in made:
        assert len(code) == codes.CODE_LENGTH
        assert codes.check_symbol(code[:-1]) == code[-1]
    assert all(codes.parse(code) == code for code in made[:2000])
    assert all(codes.parse(codes.display(code, "CAFE")) == code for code in made[:200])
    # every symbol turns up at every position (uniform 5-bit symbols)
    for position in range(codes.BODY_LENGTH):
        assert set(code[position] for code in made) == set(codes.ALPHABET)
    assert issuance.codes_batch(0) == [] and len(issuance.codes_batch(1)) == 1
    ids = issuance.uuid4_batch(1000)
    assert len({uuid.UUID(i) for i in ids}) == 1000
    assert {uuid.UUID(i).version for i in ids} == {4}


def test_uuid7_batch_makes_distinct_ascending_time_ordered_ids() -> None:
    now_ms = 1_764_600_000_123
    ids = issuance.uuid7_batch(5000, now_ms=now_ms)
    parsed = [uuid.UUID(i) for i in ids]
    assert len(set(parsed)) == 5000 and ids == sorted(ids)
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert {u.int >> 80 for u in parsed} == {now_ms}  # the 48-bit millisecond timestamp
    later = issuance.uuid7_batch(10, now_ms=now_ms + 1)
    assert min(later) > max(ids)  # later batches sort after earlier ones
    assert issuance.uuid7_batch(0) == []
    # the counter (after the version and the variant bits) counts 0, 1, 2 ... across every
    # byte it spans; the 48 bits after it stay random
    many = [uuid.UUID(bytes=bytes(b)) for b in _split(issuance.uuid7_packed(70_000), 16)]
    counters = [((u.int >> 64) & 0xFFF) << 14 | ((u.int >> 48) & 0x3FFF) for u in many]
    assert counters == list(range(70_000)) and many == sorted(many)
    assert {u.version for u in many} == {7} and {u.variant for u in many} == {uuid.RFC_4122}
    assert len({u.int & (2**48 - 1) for u in many}) > 69_900


def _split(packed: bytes, width: int) -> list[bytes]:
    return [packed[i : i + width] for i in range(0, len(packed), width)]


def test_codes_are_written_ascending_and_chunks_cover_every_target_once() -> None:
    packed = issuance.codes_packed(5000)
    ordered = issuance.ascending(packed, codes.CODE_LENGTH)
    assert _split(ordered, codes.CODE_LENGTH) == sorted(_split(packed, codes.CODE_LENGTH))
    assert issuance.unpack_codes(ordered) == sorted(issuance.unpack_codes(packed))
    for count, size in ((0, 3), (1, 3), (6, 3), (7, 3), (25_001, 25_000)):
        bounds = issuance.chunk_bounds(count, size)
        covered = [i for start, end in bounds for i in range(start, end)]
        assert covered == list(range(count))
        assert all(0 < end - start <= size for start, end in bounds)


def test_parse_upload_reports_each_bad_line() -> None:
    good = [str(uuid.uuid4()) for _ in range(3)]
    parsed = issuance.parse_upload(
        csv_of(
            f"{good[0]},x",
            "not-a-uuid,y",
            "",
            f"{good[1].upper()},z",
            f"{good[0]},dup",
            ",empty",
            f"{{{good[2]}}},braces",
            header="Customer_ID,note",
        )
    )
    assert parsed.kind == "customer_id" and parsed.total == 6
    assert parsed.lines == [2, 5, 8] and parsed.values == [good[0], good[1], good[2]]
    assert [(e["line"], e["reason"]) for e in parsed.errors] == [
        (3, "malformed_customer_id"),
        (6, "duplicate"),
        (7, "missing_value"),
    ]
    assert "line 2" in parsed.errors[1]["detail"]
    with pytest.raises(issuance.UnusableUpload):
        issuance.parse_upload(b"email\na@b.c\n")
    with pytest.raises(issuance.UnusableUpload):
        issuance.parse_upload(b"customer_id\n")
    with pytest.raises(issuance.UnusableUpload):
        issuance.parse_upload(b"customer_id\n\xff\xfe\n")


def test_a_plain_file_of_ids_reads_as_the_csv_reader_reads_it() -> None:
    ids = [str(uuid.uuid4()) for _ in range(500)]
    plain = issuance.parse_upload(csv_of(*ids))  # the fast path: one id per line
    crlf = issuance.parse_upload(("customer_id\r\n" + "\r\n".join(ids) + "\r\n").encode())
    for parsed in (plain, crlf):
        assert parsed.kind == "customer_id" and parsed.total == 500 and parsed.rejected == 0
        assert parsed.lines == list(range(2, 502)) and parsed.values == ids
        assert parsed.errors == []
    no_last_newline = issuance.parse_upload(csv_of(*ids).rstrip(b"\n"))
    assert no_last_newline.values == ids and no_last_newline.total == 500
    # anything irregular goes through the reader, which reports it line by line
    duplicate = issuance.parse_upload(csv_of(ids[0], ids[1], ids[0]))
    assert duplicate.values == ids[:2] and duplicate.rejected == 1
    assert [(e["line"], e["reason"]) for e in duplicate.errors] == [(4, "duplicate")]
    blank = issuance.parse_upload(csv_of(ids[0], "", ids[1]))
    assert blank.lines == [2, 4] and blank.total == 2
    upper = issuance.parse_upload(csv_of(ids[0].upper()))
    assert upper.values == [ids[0]]


def test_capacity_plan_never_takes_more_than_all_slots_hold() -> None:
    rooms = [issuance.SlotRoom(s, 3, 1500, [None, 700], [0, 0]) for s in range(4)]
    plan = issuance.plan_capacity(rooms, 100, 500, [300, 200])
    # quantity 12, budget 6000 // 500 = 12, the café's cap 2800 // 200 = 14
    assert plan.count == 12 and plan.shortfall == "sold_out"
    assert sum(plan.per_slot) == 12
    assert sum(r.quantity for r in plan.after) == 0
    assert sum(r.budget for r in plan.after) == 0
    assert sum(r.funders[1] or 0 for r in plan.after) == 2800 - 12 * 200
    assert [sum(r.held[i] for r in plan.after) for i in (0, 1)] == [12 * 300, 12 * 200]
    capped = issuance.plan_capacity(rooms, 100, 500, [300, 400])
    assert capped.count == 7 and capped.shortfall == "budget_exhausted"
    fits = issuance.plan_capacity(rooms, 5, 500, [300, 200])
    assert fits.count == 5 and fits.shortfall is None
    assert all(r.quantity >= 0 and r.budget >= 0 and (r.funders[1] or 0) >= 0 for r in fits.after)


# --- uploads over HTTP -----------------------------------------------------------------------


async def test_csv_upload_reports_bad_lines_then_the_job_issues_the_rest(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, quantity=100)
    people = await make_customers(session, 5)
    unknown = uuid.uuid4()
    body = csv_of(
        f"{people[0].id},Ann",
        "12345,Bob",
        f"{unknown},Cat",
        f"{people[1].id},Dan",
        "",
        f"{people[0].id},Ann again",
        f"{str(people[2].id).upper()},Eve",
        f"{people[3].id},Fay",
        f"{people[4].id},Gus",
        header="customer_id,name",
    )
    headers = await auth_headers(client, OWNER)
    response = await upload(client, headers, campaign.id, body)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert (batch["status"], batch["source"], batch["total"]) == ("pending", "csv", 8)
    assert (batch["rejected"], batch["issued"], batch["remaining"]) == (3, 0, 5)
    assert [(e["line"], e["reason"], e["value"]) for e in batch["errors"]] == [
        (3, "malformed_customer_id", "12345"),
        (4, "unknown_customer", str(unknown)),
        (7, "duplicate", str(people[0].id)),
    ]
    outbox = (await session.execute(select(JobOutbox))).scalars().one()
    assert (outbox.function, outbox.args) == ("issue_batch", [batch["id"]])

    progress = await issuance.issue_batch(session, uuid.UUID(batch["id"]))
    assert (progress.status, progress.issued, progress.rejected) == ("completed", 5, 3)

    made = await assert_exactly_once(session, uuid.UUID(batch["id"]), campaign.id, 5)
    assert {c.customer_id for c in made} == {p.id for p in people}
    for coupon in made:
        assert coupon.status == "issued" and coupon.holder_seq == 1
        assert coupon.reserved_amount == 500 and coupon.funder_reserved == [300, 200]
        assert coupon.slot is not None and coupon.claim_day is None
        assert coupon.valid_until > coupon.valid_from == coupon.issued_at
    remaining, budget, lowest = await slot_sums(session, campaign.id)
    assert (remaining, budget, lowest >= 0) == (95, 10_000_000 - 5 * 500, True)
    held = (await session.execute(select(ClaimSlot.funder_held))).scalars().all()
    assert [sum(h[i] for h in held) for i in (0, 1)] == [5 * 300, 5 * 200]
    figures_issued = (await session.execute(select(func.sum(CampaignDailyStat.issued)))).scalar()
    assert figures_issued == 5

    read = await client.get(f"/api/v1/issuances/{batch['id']}?errors_limit=2", headers=headers)
    assert read.status_code == 200, read.text
    body_read = read.json()
    assert (body_read["status"], body_read["percent"], body_read["remaining"]) == (
        "completed",
        100.0,
        0,
    )
    assert [e["line"] for e in body_read["errors"]] == [3, 4]
    assert body_read["errors_stored"] == 3 and body_read["errors_truncated"] is False
    listing = await client.get(f"/api/v1/campaigns/{campaign.id}/issuances", headers=headers)
    assert listing.status_code == 200
    assert [b["id"] for b in listing.json()["items"]] == [batch["id"]]


async def test_phone_column_is_matched_by_keyed_hash_and_never_stored(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world)
    hasher = issuance.phone_hasher(settings)
    numbers = ["+8613800000001", "+8613800000002", "+8613800000003"]
    people = await make_customers(session, 3, hashes=[hasher(n) for n in numbers])
    body = csv_of(
        "138 0000 0001",
        "+86 138-0000-0002",
        "hello",
        "13900000009",
        "8613800000001",
        "0086 13800000003",
        header="phone",
    )
    headers = await auth_headers(client, OWNER)
    response = await upload(client, headers, campaign.id, body)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert [(e["line"], e["reason"]) for e in batch["errors"]] == [
        (4, "malformed_phone"),
        (5, "unknown_customer"),
        (6, "duplicate"),
    ]
    stored = (await batch_row(session, batch["id"])).errors
    assert "13900000009" not in str(stored) and "13800000001" not in str(stored)
    assert stored[1]["value"] == "*******0009"
    await issuance.issue_batch(session, uuid.UUID(batch["id"]))
    made = await assert_exactly_once(session, uuid.UUID(batch["id"]), campaign.id, 3)
    assert {c.customer_id for c in made} == {p.id for p in people}

    refused = await upload(client, headers, campaign.id, body, notify="true")
    assert refused.status_code == 422 and refused.json()["code"] == "notify_unavailable"


async def test_audience_request_targets_the_campaign_segment(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(
        session,
        world,
        audience="segment",
        audience_min_tier=4,
        audience_tags=["coffee", "student"],
        audience_on_network_only=True,
    )
    fits = await make_customers(session, 4, tier=5, tags=["coffee"])
    fits += await make_customers(session, 2, tier=7, tags=["student", "gamer"])
    await make_customers(session, 3, tier=3, tags=["coffee"])  # tier too low
    await make_customers(session, 2, tier=6, tags=["tea"])  # no tag in common
    await make_customers(session, 2, tier=6, tags=["coffee"], on_network=False)
    headers = await auth_headers(client, OWNER)
    url = f"/api/v1/campaigns/{campaign.id}/issuances"
    response = await client.post(url, json={"audience": True}, headers=headers)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert (batch["source"], batch["total"], batch["rejected"]) == ("audience", 6, 0)
    await issuance.issue_batch(session, uuid.UUID(batch["id"]), chunk_size=4)
    made = await assert_exactly_once(session, uuid.UUID(batch["id"]), campaign.id, 6)
    assert {c.customer_id for c in made} == {c.id for c in fits}

    notify = await client.post(url, json={"audience": True, "notify": True}, headers=headers)
    assert notify.status_code == 422 and notify.json()["code"] == "notify_unavailable"
    unknown = await client.post(url, json={"audience": True, "extra": 1}, headers=headers)
    assert unknown.status_code == 422
    malformed = await client.post(
        url, content=b"{", headers={**headers, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    other = await client.post(
        url, content=b"x", headers={**headers, "content-type": "application/xml"}
    )
    assert other.status_code == 415


# --- resumable, exactly once -----------------------------------------------------------------


class Crash(Exception):
    pass


async def test_interrupted_runs_resume_without_duplicates_or_gaps(
    client: Client, world: World, session: AsyncSession, sessionmaker: SessionMaker
) -> None:
    campaign = await running_campaign(session, world, quantity=500)
    people = await make_customers(session, 40)
    headers = await auth_headers(client, OWNER)
    response = await upload(client, headers, campaign.id, csv_of(*(str(p.id) for p in people)))
    batch_id = uuid.UUID(response.json()["id"])

    # one chunk, then the run stops (as if the worker went away between chunks)
    async with sessionmaker() as work:
        first = await issuance.issue_batch(work, batch_id, chunk_size=7, max_chunks=1)
    assert (first.status, first.issued, first.remaining) == ("running", 7, 33)

    # a run that dies inside its first chunk, after the COPY, before the commit
    async def die(chunk: issuance.ChunkInfo) -> None:
        assert chunk.issued == 7
        raise Crash()

    async with sessionmaker() as work:
        with pytest.raises(Crash):
            await issuance.issue_batch(work, batch_id, chunk_size=7, before_commit=die)
    assert len(await coupons_of(session, campaign.id)) == 7
    assert (await batch_row(session, batch_id)).issued == 7

    # two workers resume at once: chunks serialize on the batch row
    async def resume() -> issuance.BatchProgress:
        async with sessionmaker() as work:
            return await issuance.issue_batch(work, batch_id, chunk_size=5)

    results = await asyncio.gather(resume(), resume())
    assert {r.status for r in results} == {"completed"}
    await assert_exactly_once(session, batch_id, campaign.id, 40)
    final = await batch_row(session, batch_id)
    assert (final.status, final.issued, final.rejected, final.total) == ("completed", 40, 0, 40)
    assert (await slot_sums(session, campaign.id))[0] == 460
    figures_issued = (await session.execute(select(func.sum(CampaignDailyStat.issued)))).scalar()
    assert figures_issued == 40
    again = await issuance.issue_batch(session, batch_id)  # a finished batch is left alone
    assert again.issued == 40 and len(await coupons_of(session, campaign.id)) == 40


KILLABLE_RUN = """
import asyncio, sys, uuid
from coalition.campaigns.services import issuance
from coalition.platform.db import make_engine, make_sessionmaker
from coalition.platform.settings import Settings

async def slow(chunk):
    print("chunk", chunk.number, flush=True)
    await asyncio.sleep(0.5 if chunk.number == 1 else 30)

async def main():
    engine = make_engine(Settings(database_url=sys.argv[1]), pool_size=1)
    async with make_sessionmaker(engine)() as session:
        await issuance.issue_batch(session, uuid.UUID(sys.argv[2]), chunk_size=60,
                                   before_commit=slow)

asyncio.run(main())
"""


async def test_a_worker_killed_mid_chunk_is_resumed_exactly_once(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world, quantity=1000)
    people = await make_customers(session, 150)
    headers = await auth_headers(client, OWNER)
    response = await upload(client, headers, campaign.id, csv_of(*(str(p.id) for p in people)))
    batch_id = uuid.UUID(response.json()["id"])

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLABLE_RUN,
        settings.database_url or "",
        str(batch_id),
        stdout=subprocess.PIPE,
        cwd=str(ROOT),
    )
    assert process.stdout is not None
    lines = []
    async with asyncio.timeout(60):
        while (line := (await process.stdout.readline()).decode().strip()) != "chunk 2":
            assert line, "the worker ended early"
            if line.startswith("chunk"):
                lines.append(line)
    # chunk 2 has written its coupons and is waiting to commit: kill -9
    process.send_signal(signal.SIGKILL)
    await process.wait()
    assert lines == ["chunk 1"]

    killed = await batch_row(session, batch_id)
    assert (killed.status, killed.issued) == ("running", 60)
    assert len(await coupons_of(session, campaign.id)) == 60  # chunk 2 was never committed
    # (its server process notices the dead client, rolls back and frees the batch row)
    resumed = await issuance.issue_batch(session, batch_id, chunk_size=60)
    assert (resumed.status, resumed.issued) == ("completed", 150)
    await assert_exactly_once(session, batch_id, campaign.id, 150)
    assert (await slot_sums(session, campaign.id))[0] == 850


test_registry = JobRegistry("test-issuance")


@test_registry.job(timeout=3600)
async def issue_batch(ctx: JobContext, batch_id: str) -> dict[str, object]:
    """The job as campaigns/jobs.py registers it."""
    async with job_session(ctx) as session:
        progress = await issuance.issue_batch(session, uuid.UUID(batch_id))
    return progress.as_dict()


async def test_a_real_worker_runs_the_uploaded_batch(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world)
    people = await make_customers(session, 30)
    headers = await auth_headers(client, OWNER)
    body = csv_of(*(str(p.id) for p in people), "oops")
    response = await upload(client, headers, campaign.id, body)
    assert response.status_code == 202
    batch_id = uuid.UUID(response.json()["id"])
    # The app queued the job after its commit (or, had Redis missed it, the worker's relay
    # sends it at start-up): either way the worker below runs it once.

    options = worker_options(settings)
    functions = [f for f in options["functions"] if f.name != "issue_batch"]
    worker = build_worker(
        settings,
        functions=[*functions, *test_registry.functions],
        burst=True,
        handle_signals=False,
        poll_delay=0.05,
    )
    try:
        await worker.main()
    finally:
        await worker.close()

    done = await batch_row(session, batch_id)
    assert (done.status, done.issued, done.rejected) == ("completed", 30, 1)
    await assert_exactly_once(session, batch_id, campaign.id, 30)
    outbox = (await session.execute(select(JobOutbox))).scalars().one()
    await session.refresh(outbox)
    assert outbox.completed_at is not None
    page = (await client.get(f"/api/v1/issuances/{batch_id}", headers=headers)).json()
    assert (page["percent"], page["errors"][0]["line"]) == (100.0, 32)


# --- capacity and limits ---------------------------------------------------------------------


async def test_running_out_of_quantity_stops_cleanly_without_overselling(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, quantity=10)
    people = await make_customers(session, 25)
    headers = await auth_headers(client, OWNER)
    response = await upload(client, headers, campaign.id, csv_of(*(str(p.id) for p in people)))
    batch_id = uuid.UUID(response.json()["id"])
    progress = await issuance.issue_batch(session, batch_id, chunk_size=4)
    assert (progress.status, progress.issued, progress.remaining) == ("failed", 10, 15)
    made = await coupons_of(session, campaign.id)
    assert len(made) == 10
    assert {c.customer_id for c in made} == {p.id for p in people[:10]}  # in row order
    remaining, _, lowest = await slot_sums(session, campaign.id)
    assert (remaining, lowest) == (0, 0)
    batch = await batch_row(session, batch_id)
    assert batch.errors[-1]["line"] is None and batch.errors[-1]["reason"] == "sold_out"
    assert "15 rows left" in batch.errors[-1]["detail"]
    assert (await issuance.issue_batch(session, batch_id)).issued == 10  # stays stopped

    # more room (as if the owner raised the quantity), reopened: it goes on where it stopped
    await session.execute(
        text("UPDATE claim_slot SET remaining_quantity = 1 WHERE campaign_id = :c AND slot < 20"),
        {"c": campaign.id},
    )
    await session.commit()
    await issuance.reopen_batch(session, batch_id)
    final = await issuance.issue_batch(session, batch_id, chunk_size=4)
    assert (final.status, final.issued, final.remaining) == ("completed", 25, 0)
    await assert_exactly_once(session, batch_id, campaign.id, 25)
    assert (await slot_sums(session, campaign.id))[0] == 5


async def test_a_funder_cap_bounds_bulk_issuance(
    client: Client, world: World, session: AsyncSession
) -> None:
    # 500 off per coupon; the café funds 40% = 200 per coupon and caps its share at 1000
    campaign = await running_campaign(session, world, quantity=100, caps=(None, 1000))
    people = await make_customers(session, 8)
    headers = await auth_headers(client, OWNER)
    response = await upload(client, headers, campaign.id, csv_of(*(str(p.id) for p in people)))
    progress = await issuance.issue_batch(session, uuid.UUID(response.json()["id"]))
    assert (progress.status, progress.issued) == ("failed", 5)
    batch = await batch_row(session, response.json()["id"])
    assert batch.errors[-1]["reason"] == "budget_exhausted"
    caps = (await session.execute(select(ClaimSlot.funder_remaining))).scalars().all()
    assert sum(c[1] for c in caps) == 0 and all(c[1] >= 0 for c in caps)
    assert len(await coupons_of(session, campaign.id)) == 5


async def test_the_per_customer_limit_is_respected_across_batches(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, per_customer_limit=2)
    people = await make_customers(session, 4)
    headers = await auth_headers(client, OWNER)
    ids = [str(p.id) for p in people]
    for body in (csv_of(ids[0], ids[1]), csv_of(ids[0], ids[2]), csv_of(*ids)):
        response = await upload(client, headers, campaign.id, body)
        assert response.status_code == 202
        await issuance.issue_batch(session, uuid.UUID(response.json()["id"]), chunk_size=3)
    last = await batch_row(session, response.json()["id"])
    assert (last.status, last.issued, last.rejected) == ("completed", 3, 1)
    assert [(e["line"], e["reason"]) for e in last.errors] == [(2, "per_customer_limit_reached")]
    made = await coupons_of(session, campaign.id)
    held = Counter(c.customer_id for c in made)
    assert held == {people[0].id: 2, people[1].id: 2, people[2].id: 2, people[3].id: 1}
    seqs = sorted((c.customer_id, c.holder_seq) for c in made if c.customer_id == people[1].id)
    assert [s for _, s in seqs] == [1, 2]
    left = await targets_of(session, last.id)
    assert sorted(r for r, _ in left) == [3, 4, 5]  # the refused target is gone ...
    issued_to = {c.customer_id for c in made if c.batch_id == last.id}
    assert {c for _, c in left} == issued_to  # ... and the others have their coupons
    assert last.done_through_row == 5


async def test_a_retried_upload_with_an_idempotency_key_makes_one_batch(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world)
    people = await make_customers(session, 3)
    owner = await auth_headers(client, OWNER)
    body = csv_of(*(str(p.id) for p in people))
    keyed = {**owner, "Idempotency-Key": "upload-2026-11-23-a"}
    first = await upload(client, keyed, campaign.id, body)
    again = await upload(client, keyed, campaign.id, body)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert (await session.execute(select(func.count()).select_from(IssueBatch))).scalar() == 1
    other = await upload(client, keyed, campaign.id, csv_of(str(people[0].id)))
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    bad = await upload(client, {**owner, "Idempotency-Key": "bad key"}, campaign.id, body)
    assert bad.status_code == 422 and bad.json()["code"] == "idempotency_key_invalid"


# --- access ----------------------------------------------------------------------------------


async def test_only_the_owner_s_managers_issue_and_others_see_404(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world)
    people = await make_customers(session, 2)
    body = csv_of(*(str(p.id) for p in people))
    owner = await auth_headers(client, OWNER)
    made = await upload(client, owner, campaign.id, body)
    assert made.status_code == 202
    batch_id = made.json()["id"]
    for email in ("admin@bank.test", "admin@cafe.test"):  # another org; a funder, not owner
        other = await auth_headers(client, email)
        assert (await upload(client, other, campaign.id, body)).status_code == 404
        assert (await client.get(f"/api/v1/issuances/{batch_id}", headers=other)).status_code == 404
        listing = await client.get(f"/api/v1/campaigns/{campaign.id}/issuances", headers=other)
        assert listing.status_code == 404
    finance = await auth_headers(client, "finance@carrier.test")
    assert (await upload(client, finance, campaign.id, body)).status_code == 403
    assert (await client.get(f"/api/v1/issuances/{batch_id}", headers=finance)).status_code == 200
    assert (await client.get(f"/api/v1/issuances/{uuid.uuid4()}", headers=owner)).status_code == 404

    await session.execute(
        text("UPDATE campaign SET status = 'paused' WHERE id = :id"), {"id": campaign.id}
    )
    await session.commit()
    paused = await upload(client, owner, campaign.id, body)
    assert paused.status_code == 409 and paused.json()["code"] == "campaign_not_active"
    # the batch queued before the pause stops with a batch-level error
    progress = await issuance.issue_batch(session, uuid.UUID(batch_id))
    assert (progress.status, progress.issued) == ("failed", 0)
    assert (await batch_row(session, batch_id)).errors[-1]["reason"] == "campaign_not_active"


async def test_bad_files_are_refused_whole(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world)
    owner = await auth_headers(client, OWNER)
    for body in (b"email\nx@y.z\n", b"customer_id\n", b"customer_id\n\xff\n"):
        response = await upload(client, owner, campaign.id, body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "issuance_file_invalid"
    assert (await session.execute(select(func.count()).select_from(IssueBatch))).scalar() == 0


# --- the command line ------------------------------------------------------------------------


def coalition_issue(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url or ""}
    code = (
        "import sys; from coalition.campaigns.controllers.issuance import issue_command; "
        "issue_command(sys.argv[1:], prog_name='coalition issue')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=120,
        check=False,
    )


async def test_the_issue_command_uploads_issues_and_texts_with_a_progress_bar(
    world: World, session: AsyncSession, settings: Settings, tmp_path: Path
) -> None:
    campaign = await running_campaign(session, world)
    hasher = issuance.phone_hasher(settings)
    numbers = [f"+86138{i:08d}" for i in range(12)]
    people = await make_customers(session, 12, hashes=[hasher(n) for n in numbers])
    by_id = tmp_path / "ids.csv"
    by_id.write_bytes(csv_of(*(str(p.id) for p in people[:6]), "bogus"))
    result = coalition_issue(settings, str(campaign.id), str(by_id), "--wait", "--chunk-size", "4")
    assert result.returncode == 0, result.stderr
    assert "6 issued, 1 rejected, 0 remaining" in result.stdout
    assert "line 8: malformed_customer_id 'bogus'" in result.stdout
    assert "issuing" in result.stdout  # the progress bar

    phones = tmp_path / "phones.csv"
    phones.write_bytes(csv_of(*numbers[6:], "+8613999999999", header="phone"))
    texted = coalition_issue(settings, str(campaign.id), str(phones), "--notify")
    assert texted.returncode == 0, texted.stderr
    assert "6 issued, 1 rejected" in texted.stdout
    assert "texts: 6 sent, 0 failed" in texted.stdout
    assert "13999999999" not in texted.stdout  # numbers only masked

    queued = coalition_issue(settings, str(campaign.id), str(by_id))
    assert queued.returncode == 0 and "queued for the worker" in queued.stdout
    match = re.search(r"^batch ([0-9a-f-]{36}):", queued.stdout, re.MULTILINE)
    assert match is not None
    queued_id = match.group(1)
    resumed = coalition_issue(settings, str(campaign.id), str(by_id), "--resume", queued_id)
    assert resumed.returncode == 0, resumed.stderr
    # the same six customers already hold the one coupon each the campaign allows
    assert "0 issued, 7 rejected, 0 remaining" in resumed.stdout
    assert "per_customer_limit_reached 6" in resumed.stdout
    outbox = (await session.execute(select(JobOutbox.function))).scalars().all()
    assert outbox == ["issue_batch", "issue_batch"]  # --wait (a safety net) and the queued one
    await assert_exactly_once(
        session,
        (await session.execute(select(IssueBatch.id).where(col(IssueBatch.notify)))).scalar_one(),
        campaign.id,
        6,
    )
    assert len(await coupons_of(session, campaign.id)) == 12

    refused = coalition_issue(settings, str(uuid.uuid4()), str(by_id))
    assert refused.returncode != 0 and "Campaign not found" in refused.stderr
