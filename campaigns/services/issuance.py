"""Bulk issuance: a campaign's coupons for a targeted list, written in chunks, resumable.

1. **Upload** (`create_csv_issuance`, `create_audience_issuance`): the owner's staff send a CSV
   (a header row naming a `customer_id` or a `phone` column) or ask for the campaign's audience.
   Rows are checked (malformed value, duplicate in the file; unknown customers by one query
   probing the customer table for every id) and the accepted ones are written with COPY as
   `IssueBatchChunk` rows: up to `CHUNK_SIZE` targets per row, their line numbers and customer
   ids as two aligned arrays (40 rows for a million targets, not a million).
   Every rejected row is counted in `rejected`; the first `MAX_STORED_ERRORS` (by line) are
   kept in `IssueBatch.errors`. The batch is recorded `pending` with its job in one commit.
2. **Issuing** (`issue_batch`, the `issue_batch` job): targets without a coupon are taken in
   row order, `chunk_size` at a time, each chunk in ONE transaction that locks the batch row,
   takes the chunk's capacity from every `ClaimSlot` of the campaign (locked FOR UPDATE; their
   CHECK constraints stay the arbiter against overselling), COPYs the coupons in PostgreSQL's
   binary format, encoded a column at a time (`platform/pgcopy.py`; status `issued`, the
   customer's next `holder_seq`, the claim's reservation and funder parts, validity from the
   issue time, the batch's id; ids, codes and, for a whole stored chunk, customers ascending,
   so the indexes take them in key order), drops the targets refused for the per-customer
   limit from their chunk (their error is reported), bumps the `issued` figures and the
   batch's counters, and moves the batch's cursor (`done_through_row`) past the chunk. A
   worker killed at any point leaves whole chunks done or not done, so running the job again
   resumes right after the cursor: no duplicates, no gaps. When the
   quantity, the budget or a funder's cap runs out, the coupons that fit are issued and the
   batch stops `failed` with a batch-level error (`line` null); nothing is oversold.
3. **Notifications** need the subscribers' phone numbers, which the platform never stores. They
   are sent only by the process that holds them: `coalition issue FILE.csv --notify` (a `phone`
   column) issues in-process and texts each coupon after its chunk commits (at most once: a
   crash between a commit and its texts loses those texts). The HTTP API refuses `notify`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import csv
import gc
import hashlib
import heapq
import io
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any, Literal

import asyncpg
import msgspec
import structlog
from sqlalchemy import func, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns import codes, domain, qr
from coalition.campaigns.models import Campaign, IssueBatch
from coalition.campaigns.schemas.issuance import (
    IssuanceRead,
    IssuanceRowError,
    IssuanceSummary,
)
from coalition.campaigns.services import figures, slots
from coalition.campaigns.services.coupons import CampaignNotActive, funding_of
from coalition.platform import audit, idempotency, pgcopy
from coalition.platform.auth import Principal
from coalition.platform.db import driver_connection, utcnow
from coalition.platform.errors import DomainError, Forbidden, NotFound, ValidationFailed
from coalition.platform.jobs import commit, enqueue
from coalition.platform.settings import Settings

log = structlog.get_logger("coalition.issuance")

CHUNK_SIZE = 25_000  # targets per transaction
MAX_STORED_ERRORS = 1_000  # error entries kept per batch; every rejection is counted
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
CHUNK_ATTEMPTS = 5  # a chunk lost to a unique conflict (a concurrent claim) is simply redone
JOB_NAME = "issue_batch"
FINISHED = ("completed", "failed")
TargetKind = Literal["customer_id", "phone"]


class RowError(StrEnum):
    """Why a row got no coupon. The values are stable codes."""

    MISSING_VALUE = "missing_value"
    MALFORMED_CUSTOMER_ID = "malformed_customer_id"
    MALFORMED_PHONE = "malformed_phone"
    DUPLICATE = "duplicate"
    UNKNOWN_CUSTOMER = "unknown_customer"
    LIMIT_REACHED = "per_customer_limit_reached"


class BatchError(StrEnum):
    """Why a batch stopped before its last row (reported with `line` null)."""

    SOLD_OUT = "sold_out"
    BUDGET_EXHAUSTED = "budget_exhausted"
    CAMPAIGN_NOT_ACTIVE = "campaign_not_active"
    VALIDITY_OVER = "validity_over"


class IssuanceNotFound(NotFound):
    code, title = "issuance_not_found", "Issuance not found"


class UnusableUpload(ValidationFailed):
    code, title = "issuance_file_invalid", "The uploaded file cannot be used"


class NotifyUnavailable(ValidationFailed):
    code, title = "notify_unavailable", "Coupons cannot be texted from here"


class NotCampaignOwner(Forbidden):
    code, title = "not_campaign_owner", "Only the campaign owner's staff issue its coupons"


# --- codes and ids in bulk -------------------------------------------------------------------

_BODY = codes.BODY_LENGTH
_LENGTH = codes.CODE_LENGTH
_ALPHABET = codes.ALPHABET.encode("ascii")
# A random byte's low five bits are uniform over 0..31, so each table below maps a uniformly
# random byte to a uniformly random symbol (or to that symbol's Luhn contribution).
_SYMBOL = bytes(_ALPHABET[b & 31] for b in range(256))
_SINGLE = bytes(b & 31 for b in range(256))
_DOUBLE = bytes((2 * (b & 31)) // 32 + (2 * (b & 31)) % 32 for b in range(256))
_CHECK = bytes(_ALPHABET[-b % 32] for b in range(256))  # sum (mod 32) -> check symbol
_UUID_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_UUID7_VERSION = bytes((b & 0x0F) | 0x70 for b in range(256))
_UUID_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


def codes_packed(n: int) -> bytes:
    """`n` fresh coupon codes in the format of `codes.new_code()` (13 CSPRNG Crockford symbols
    and a Luhn mod 32 check symbol), back to back as ASCII (`codes.CODE_LENGTH` bytes each),
    made with bytes operations instead of a loop per symbol.

    The check symbols of all codes are summed at once: the k-th symbols of every code, mapped
    to their Luhn contributions, are read as one little-endian integer, one byte per code, and
    the 13 integers are added. A byte never carries into the next one: eight contributions are
    at most 8 * 31 = 248, then the sums are reduced mod 32 before the last five are added.
    """
    if n <= 0:
        return b""
    raw = os.urandom(_BODY * n)
    total = 0
    for k in range(_BODY):
        # Luhn doubles the rightmost symbol and every second one to its left.
        table = _DOUBLE if (_BODY - 1 - k) % 2 == 0 else _SINGLE
        total += int.from_bytes(raw[k::_BODY].translate(table), "little")
        if k == 7:
            total = int.from_bytes(total.to_bytes(n, "little").translate(_SINGLE), "little")
    checks = total.to_bytes(n, "little").translate(_CHECK)
    symbols = raw.translate(_SYMBOL)
    out = bytearray(_LENGTH * n)
    for k in range(_BODY):
        out[k::_LENGTH] = symbols[k::_BODY]
    out[_BODY::_LENGTH] = checks
    return bytes(out)


def codes_batch(n: int) -> list[str]:
    """`n` fresh coupon codes (see `codes_packed`) as strings."""
    return unpack_codes(codes_packed(n))


def unpack_codes(packed: bytes) -> list[str]:
    text = packed.decode("ascii")
    return [text[i : i + _LENGTH] for i in range(0, len(text), _LENGTH)]


def uuid4_batch(n: int) -> list[str]:
    """`n` random (version 4) UUIDs as 32 hex digits, the form PostgreSQL reads."""
    if n <= 0:
        return []
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    return raw.hex("\n", 16).split("\n")


_COUNTER_BITS = 26  # of a UUIDv7's 74 bits after the version; the 48 others stay random


def uuid7_packed(n: int, *, now_ms: int | None = None) -> bytes:
    """`n` time-ordered (version 7, RFC 9562) UUIDs, 16 bytes each back to back, ascending:
    the current Unix time in milliseconds, a 26-bit counter (RFC 9562's fixed-length
    dedicated counter, from 0 in each call) in the bits after the version (rand_a and the top
    of rand_b), then 48 random bits. Coupon ids of a bulk issuance: written in ascending order
    they are appended at the right edge of the primary key index instead of landing on random
    pages of it (a third of the COPY's time with random ids). Every byte column is made at
    once (the counter's bytes as repeated runs), with no loop per id and no sort."""
    if n <= 0:
        return b""
    if n > 1 << _COUNTER_BITS:
        raise ValueError(f"at most {1 << _COUNTER_BITS} ids per call")
    stamp = (time.time_ns() // 1_000_000 if now_ms is None else now_ms).to_bytes(6, "big")
    raw = bytearray(os.urandom(16 * n))
    for k in range(6):
        raw[k::16] = stamp[k : k + 1] * n
    # counter bits 25-22 | 21-14 | 13-8 | 7-0 go to bytes 6 (after the version nibble), 7,
    # 8 (after the variant bits) and 9.
    raw[6::16] = _counter_byte(n, 22, 0x0F, 0x70)
    raw[7::16] = _counter_byte(n, 14, 0xFF, 0x00)
    raw[8::16] = _counter_byte(n, 8, 0x3F, 0x80)
    raw[9::16] = _counter_byte(n, 0, 0xFF, 0x00)
    return bytes(raw)


def _counter_byte(n: int, shift: int, mask: int, flags: int) -> bytes:
    """For counters 0..n-1: `flags | (counter >> shift) & mask`, one byte each."""
    run = 1 << shift  # counters in a row with the same byte
    cycle = b"".join(  # one cycle of the byte's values, or the first n bytes of it
        bytes((flags | v,)) * min(run, n - v * run) for v in range(min(mask + 1, -(-n // run)))
    )
    return (cycle * -(-n // len(cycle)))[:n]


def uuid7_batch(n: int, *, now_ms: int | None = None) -> list[str]:
    """`n` ids of `uuid7_packed` as 32 hex digits, the form PostgreSQL reads."""
    if n <= 0:
        return []
    return uuid7_packed(n, now_ms=now_ms).hex("\n", 16).split("\n")


# --- the upload ------------------------------------------------------------------------------

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
COLUMNS: tuple[TargetKind, ...] = ("customer_id", "phone")


def row_error(line: int | None, value: str | None, reason: str, detail: str) -> dict[str, Any]:
    return {"line": line, "value": value, "reason": reason, "detail": detail}


@dataclass(slots=True)
class ParsedUpload:
    """An upload's rows after the checks that need no database."""

    kind: TargetKind
    total: int = 0  # data rows (blank lines are not rows)
    lines: list[int] = field(default_factory=list)  # accepted rows, ascending
    values: list[str] = field(default_factory=list)  # customer id, or external id hash
    hints: list[str] = field(default_factory=list)  # phone uploads: masked numbers
    phones: list[str] = field(default_factory=list)  # phone uploads with keep_phones: E.164
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_STORED_ERRORS
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # every rejection counted

    def reject(self, line: int, value: str | None, reason: RowError, detail: str) -> None:
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
        if len(self.errors) < MAX_STORED_ERRORS:
            self.errors.append(row_error(line, value, reason, detail))

    def phone_of_line(self, line: int) -> str | None:
        index = bisect.bisect_left(self.lines, line)
        if self.phones and index < len(self.lines) and self.lines[index] == line:
            return self.phones[index]
        return None


def parse_upload(
    data: bytes,
    *,
    hash_phone: Callable[[str], str] | None = None,
    keep_phones: bool = False,
) -> ParsedUpload:
    """Read an uploaded CSV: a header row naming a `customer_id` column (our customer ids) or a
    `phone` column (numbers, hashed with `hash_phone`; never kept unless `keep_phones`).

    Pure: no I/O. Raises `UnusableUpload` when the file as a whole cannot be used.
    """
    from coalition.platform.sms import mask_phone, normalize_phone

    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnusableUpload("The file is not UTF-8 text", field="file") from exc
    plain = _plain_customer_ids(content)
    if plain is not None:
        return plain
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader, None)
        names = [name.strip().lower() for name in header or []]
        kind = next((c for c in COLUMNS if c in names), None)
        if kind is None:
            raise UnusableUpload(
                "The first line must be a header naming a `customer_id` or a `phone` column",
                field="file",
            )
        hasher: Callable[[str], str] = hash_phone or _no_phones
        column = names.index(kind)
        parsed = ParsedUpload(kind=kind)
        seen: dict[str, int] = {}
        lines, values = parsed.lines, parsed.values
        for fields in reader:
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            parsed.total += 1
            raw = fields[column].strip() if column < len(fields) else ""
            if not raw:
                parsed.reject(line, None, RowError.MISSING_VALUE, f"No {kind} on this line")
                continue
            if kind == "customer_id":
                value = raw if _CANONICAL_UUID.match(raw) else _canonical_uuid(raw)
                shown = raw[:64]
                if value is None:
                    parsed.reject(
                        line, shown, RowError.MALFORMED_CUSTOMER_ID, "Not a customer id (UUID)"
                    )
                    continue
            else:
                shown = mask_phone(raw)
                try:
                    e164 = normalize_phone(raw)
                except DomainError as exc:
                    parsed.reject(line, shown, RowError.MALFORMED_PHONE, exc.detail)
                    continue
                value = hasher(e164)
            first = seen.get(value)
            if first is not None:
                parsed.reject(line, shown, RowError.DUPLICATE, f"Same customer as line {first}")
                continue
            seen[value] = line
            lines.append(line)
            values.append(value)
            if kind == "phone":
                parsed.hints.append(shown)
                if keep_phones:
                    parsed.phones.append(e164)
    except csv.Error as exc:
        raise UnusableUpload(f"Line {reader.line_num}: {exc}", field="file") from exc
    if parsed.total == 0:
        raise UnusableUpload("The file has no rows after its header", field="file")
    return parsed


_PLAIN_IDS = re.compile(
    r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n)*"
    r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?"
)


def _plain_customer_ids(content: str) -> ParsedUpload | None:
    """The common machine-made file, read without a loop per line: a `customer_id` header,
    then one canonical (lower-case) id per line, no blank line, no duplicate. None for any
    other file, which the CSV reader reads line by line (same result for this one)."""
    header, newline, body = content.partition("\n")
    if not newline or header.strip().lower() != "customer_id" or "\r" in body:
        return None
    if not body or _PLAIN_IDS.fullmatch(body) is None:
        return None
    values = body.split("\n")
    if values[-1] == "":
        values.pop()
    if len(set(values)) != len(values):
        return None
    lines = list(range(2, len(values) + 2))  # the header is line 1
    return ParsedUpload(kind="customer_id", total=len(values), lines=lines, values=values)


def _no_phones(e164: str) -> str:
    raise UnusableUpload("Phone numbers cannot be matched here", field="file")


def _canonical_uuid(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


async def _campaign_to_issue(
    session: AsyncSession, principal: Principal | None, campaign_id: uuid.UUID
) -> Campaign:
    """The campaign, if the caller's organization owns it and it is running now.

    Only an active campaign has capacity to take from (its claim slots open at activation),
    so approved campaigns are refused as well as paused or ended ones.
    """
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None or (
        principal is not None and not principal.may_access(campaign.owner_org_id)
    ):
        raise NotFound("Campaign not found")
    if principal is not None and principal.org_id != campaign.owner_org_id:
        raise NotCampaignOwner()
    now = utcnow()
    if campaign.status != "active" or not campaign.starts_at <= now < campaign.ends_at:
        raise CampaignNotActive(
            f"Coupons are issued only while the campaign is active (it is {campaign.status})"
        )
    return campaign


def _new_batch(
    campaign: Campaign, *, source: str, notify: bool, actor: Principal | None
) -> IssueBatch:
    return IssueBatch(
        campaign_id=campaign.id,
        org_id=campaign.owner_org_id,
        source=source,
        status="pending",
        notify=notify,
        created_by=actor.user_id if actor is not None else None,
    )


async def _record(
    session: AsyncSession,
    batch: IssueBatch,
    actor: Principal | None,
    *,
    run_in_worker: bool,
) -> None:
    audit.record(
        session,
        actor,
        org_id=batch.org_id,
        action="issuance.created",
        subject_type="issue_batch",
        subject_id=batch.id,
        after={
            "campaign_id": str(batch.campaign_id),
            "source": batch.source,
            "total": batch.total,
            "rejected": batch.rejected,
            "notify": batch.notify,
        },
    )
    if run_in_worker:
        await enqueue(session, JOB_NAME, str(batch.id), key=f"{JOB_NAME}:{batch.id}")


class PhoneHasher:
    """The keyed hash the customers module gives a subscriber's E.164 number (its key is
    read on first use, so uploads of customer ids never need the customers settings)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._hash: Callable[[str], str] | None = None

    def __call__(self, e164: str) -> str:
        if self._hash is None:
            from coalition.campaigns.services.customer_tokens import (
                customer_config,
                external_id_hash,
            )

            self._hash = partial(external_id_hash, customer_config(self._settings).id_key)
        return self._hash(e164)


def phone_hasher(settings: Settings) -> Callable[[str], str]:
    return PhoneHasher(settings)


CHUNK_COLUMNS = ["batch_id", "chunk_no", "first_row", "last_row", "row_numbers", "customer_ids"]
# The upload's ids that name no customer: one probe of the customer key per id, in one query.
_UNKNOWN_IDS = (
    "SELECT u.row_number, u.customer_id::text "
    "FROM unnest($1::integer[], $2::uuid[]) AS u(row_number, customer_id) "
    "WHERE NOT EXISTS (SELECT 1 FROM customer c WHERE c.id = u.customer_id) "
    "ORDER BY u.row_number"
)
# Each line of a phone upload with its customer, or NULL when no customer has that number.
_MATCH_HASHES = (
    "SELECT u.row_number, c.id FROM unnest($1::integer[], $2::text[]) AS u(row_number, hash) "
    "LEFT JOIN customer c ON c.external_id_hash = u.hash ORDER BY u.row_number"
)


def chunk_bounds(count: int, size: int) -> list[tuple[int, int]]:
    """[start, end) of each chunk of `size` (the last one shorter) over `count` items."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def _without(lines: list[int], values: list[str], dropped: set[int]) -> tuple[list[int], list[str]]:
    """The lines (and their values) not in `dropped`; the same lists when none is."""
    if not dropped:
        return lines, values
    kept = [i for i, line in enumerate(lines) if line not in dropped]
    return [lines[i] for i in kept], [values[i] for i in kept]


async def store_upload(
    session: AsyncSession,
    campaign: Campaign,
    parsed: ParsedUpload,
    *,
    actor: Principal | None,
    notify: bool = False,
    run_in_worker: bool = True,
) -> IssueBatch:
    """Find the unknown customers, write the batch and its accepted targets (one row of
    arrays per chunk, COPY), and record the job (unless `run_in_worker` is false). The caller
    commits."""
    batch = _new_batch(campaign, source="csv", notify=notify, actor=actor)
    batch.total = parsed.total
    session.add(batch)
    await session.flush()
    driver = await driver_connection(session)
    if parsed.kind == "customer_id":
        unknown = await driver.fetch(_UNKNOWN_IDS, parsed.lines, parsed.values)
        missing = [(r[0], r[1]) for r in unknown]
        lines, customers = _without(parsed.lines, parsed.values, {r[0] for r in unknown})
    else:
        matched = await driver.fetch(_MATCH_HASHES, parsed.lines, parsed.values)
        hint = dict(zip(parsed.lines, parsed.hints, strict=True))
        missing = [(r[0], hint.get(r[0])) for r in matched if r[1] is None]
        lines = [r[0] for r in matched if r[1] is not None]
        customers = [r[1] for r in matched if r[1] is not None]
    await driver.copy_records_to_table(
        "issue_batch_chunk",
        records=(
            (batch.id, number, lines[a], lines[b - 1], lines[a:b], customers[a:b])
            for number, (a, b) in enumerate(chunk_bounds(len(lines), CHUNK_SIZE))
        ),
        columns=CHUNK_COLUMNS,
    )
    unknown_errors = [
        row_error(line, value, RowError.UNKNOWN_CUSTOMER, "No such customer")
        for line, value in missing[:MAX_STORED_ERRORS]
    ]
    batch.rejected = parsed.rejected + len(missing)
    batch.errors = list(heapq.merge(parsed.errors, unknown_errors, key=lambda e: e["line"] or 0))[
        :MAX_STORED_ERRORS
    ]
    await _record(session, batch, actor, run_in_worker=run_in_worker)
    log.info(
        "issuance_uploaded",
        batch_id=str(batch.id),
        total=batch.total,
        rejected=batch.rejected,
        targets=batch.total - batch.rejected,
    )
    return batch


@dataclass(frozen=True, slots=True)
class Created:
    """A created batch as the API shows it; `replayed` when an Idempotency-Key replay."""

    read: IssuanceRead
    replayed: bool


async def _create_once(
    session: AsyncSession,
    principal: Principal,
    idempotency_key: str | None,
    request: dict[str, Any],
    create: Callable[[], Awaitable[IssueBatch]],
) -> Created:
    """Run `create` and commit, once per Idempotency-Key (optional) of the organization."""
    scope = idempotency.new_scope("issuance", principal.org_id)
    fingerprint = idempotency.request_fingerprint("POST", "/issuances", request)
    if idempotency_key is not None:
        replay = await idempotency.begin(
            session, scope=scope, key=idempotency_key, fingerprint=fingerprint
        )
        if replay is not None:
            await session.rollback()
            return Created(msgspec.convert(replay.response, IssuanceRead), replayed=True)
    batch = await create()
    read = issuance_read(batch)
    if idempotency_key is not None:
        await idempotency.finish(
            session,
            scope=scope,
            key=idempotency_key,
            status_code=202,
            response=msgspec.to_builtins(read),
        )
    await commit(session)
    return Created(read, replayed=False)


async def create_csv_issuance(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    campaign_id: uuid.UUID,
    data: bytes,
    *,
    notify: bool = False,
    idempotency_key: str | None = None,
) -> Created:
    """Upload a CSV of targets for a running campaign; the `issue_batch` job issues them.

    With an Idempotency-Key, a retried upload (same key, same file) returns the first batch
    instead of making a second one; the same key with another file is a 422.
    """
    if notify:
        raise NotifyUnavailable(
            "The platform keeps no phone numbers, so it cannot text coupons later: "
            "run `coalition issue CAMPAIGN FILE.csv --notify` with a `phone` column",
            field="notify",
        )
    if len(data) > MAX_UPLOAD_BYTES:
        raise UnusableUpload(f"At most {MAX_UPLOAD_BYTES} bytes per upload", field="file")

    async def create() -> IssueBatch:
        campaign = await _campaign_to_issue(session, principal, campaign_id)
        parsed = await asyncio.to_thread(parse_upload, data, hash_phone=phone_hasher(settings))
        return await store_upload(session, campaign, parsed, actor=principal)

    request = {"campaign_id": str(campaign_id), "csv_sha256": hashlib.sha256(data).hexdigest()}
    return await _create_once(session, principal, idempotency_key, request, create)


@dataclass(frozen=True, slots=True)
class OperatorUpload:
    batch: IssueBatch
    parsed: ParsedUpload


async def create_operator_issuance(
    session: AsyncSession,
    settings: Settings,
    campaign_id: uuid.UUID,
    data: bytes,
    *,
    notify: bool = False,
) -> OperatorUpload:
    """`coalition issue`: upload as the operator (no tenant; the batch is the owner's).

    With `notify` the file needs a `phone` column; the numbers stay in this process (the
    returned `parsed.phones`) and no job is recorded: this process must issue the batch
    (`issue_batch(..., notifier=sms_notifier(...))`), as no worker could text the coupons.
    """
    campaign = await _campaign_to_issue(session, None, campaign_id)
    parsed = await asyncio.to_thread(
        parse_upload, data, hash_phone=phone_hasher(settings), keep_phones=notify
    )
    if notify and parsed.kind != "phone":
        raise NotifyUnavailable("Texting coupons needs a `phone` column", field="notify")
    batch = await store_upload(
        session, campaign, parsed, actor=None, notify=notify, run_in_worker=not notify
    )
    await commit(session)
    return OperatorUpload(batch, parsed)


async def create_audience_issuance(
    session: AsyncSession,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    notify: bool = False,
    idempotency_key: str | None = None,
) -> Created:
    """Target every customer of the campaign's audience: its tier range, tags and network for
    a segment; its list for a targeted campaign; everybody for an open one."""
    if notify:
        raise NotifyUnavailable(
            "The platform keeps no phone numbers, so it cannot text an audience",
            field="notify",
        )

    async def create() -> IssueBatch:
        campaign = await _campaign_to_issue(session, principal, campaign_id)
        batch = _new_batch(campaign, source="audience", notify=False, actor=principal)
        session.add(batch)
        await session.flush()
        conditions, params = _audience_filter(campaign)
        inserted = await session.execute(
            text(
                "WITH chunks AS ("  # noqa: S608 (fixed fragments; values are bound parameters)
                "INSERT INTO issue_batch_chunk "
                "(batch_id, chunk_no, first_row, last_row, row_numbers, customer_ids) "
                "SELECT :batch, (n - 1) / :size, min(n), max(n), "
                "array_agg(n ORDER BY n), array_agg(id ORDER BY n) FROM ("
                "SELECT row_number() OVER (ORDER BY c.created_at, c.id)::integer AS n, c.id "
                f"FROM customer c WHERE {' AND '.join(conditions)}"
                ") audience GROUP BY (n - 1) / :size RETURNING cardinality(row_numbers) AS size"
                ") SELECT coalesce(sum(size), 0) FROM chunks"
            ),
            {"batch": batch.id, "size": CHUNK_SIZE, **params},
        )
        batch.total = int(inserted.scalar_one())
        await _record(session, batch, principal, run_in_worker=True)
        return batch

    request = {"campaign_id": str(campaign_id), "audience": True}
    return await _create_once(session, principal, idempotency_key, request, create)


def _audience_filter(campaign: Campaign) -> tuple[list[str], dict[str, Any]]:
    conditions: list[str] = ["TRUE"]
    params: dict[str, Any] = {}
    if campaign.audience == "targeted":
        conditions.append(
            "EXISTS (SELECT 1 FROM campaign_target t "
            "WHERE t.campaign_id = :campaign AND t.customer_id = c.id)"
        )
        params["campaign"] = campaign.id
    elif campaign.audience == "segment":
        if campaign.audience_min_tier is not None:
            conditions.append("c.tier >= :min_tier")
            params["min_tier"] = campaign.audience_min_tier
        if campaign.audience_max_tier is not None:
            conditions.append("c.tier <= :max_tier")
            params["max_tier"] = campaign.audience_max_tier
        if campaign.audience_tags:
            conditions.append("c.tags && CAST(:tags AS text[])")
            params["tags"] = list(campaign.audience_tags)
        if campaign.audience_on_network_only:
            conditions.append("c.on_network")
    return conditions, params


# --- capacity --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotRoom:
    """A claim slot's state: what is left, and what its coupons hold per funder."""

    slot: int
    quantity: int
    budget: int
    funders: list[int | None]  # room per funder; None = no cap
    held: list[int]


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    count: int  # coupons that fit (at most the number wanted)
    shortfall: BatchError | None  # why fewer than wanted fit
    per_slot: list[int]  # coupons charged to each slot, aligned with the input
    after: list[SlotRoom]  # every slot's new state


def _spread(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def plan_capacity(
    rooms: Sequence[SlotRoom], wanted: int, reservation: int, parts: Sequence[int]
) -> CapacityPlan:
    """Take `wanted` coupons' worth (or as many as fit) from a campaign's slots, together.

    The room of all slots counts, not of each (the claim path's `_gather` does the same when
    a campaign runs dry): the slots are then rewritten with the remainder spread evenly, and
    each coupon is charged to one slot (what it holds is handed back there). Pure.
    """
    if not rooms:
        return CapacityPlan(0, BatchError.SOLD_OUT if wanted else None, [], [])
    quantity = sum(r.quantity for r in rooms)
    budget = sum(r.budget for r in rooms)
    fits = {BatchError.SOLD_OUT: quantity}
    by_budget = [budget // reservation] if reservation > 0 else []
    funder_room: list[int | None] = []
    for i, part in enumerate(parts):
        capped = [r.funders[i] for r in rooms if r.funders[i] is not None]
        room = sum(v for v in capped if v is not None) if capped else None
        funder_room.append(room)
        if room is not None and part > 0:
            by_budget.append(room // part)
    if by_budget:
        fits[BatchError.BUDGET_EXHAUSTED] = min(by_budget)
    count = max(0, min(wanted, *fits.values()))
    shortfall = None if count == wanted else min(fits, key=lambda k: fits[k])
    per_slot = _spread(count, len(rooms))
    quantities = _spread(quantity - count, len(rooms))
    budgets = _spread(budget - count * reservation, len(rooms))
    funders: list[list[int | None]] = [list(r.funders) for r in rooms]
    for i, room in enumerate(funder_room):
        if room is None:
            continue
        capped_slots = [s for s, r in enumerate(rooms) if r.funders[i] is not None]
        for s, value in zip(
            capped_slots, _spread(room - count * parts[i], len(capped_slots)), strict=True
        ):
            funders[s][i] = value
    after = [
        SlotRoom(
            slot=r.slot,
            quantity=quantities[s],
            budget=budgets[s],
            funders=funders[s],
            held=[h + per_slot[s] * part for h, part in zip(r.held, parts, strict=True)],
        )
        for s, r in enumerate(rooms)
    ]
    return CapacityPlan(count, shortfall, per_slot, after)


# --- issuing ---------------------------------------------------------------------------------

COUPON_COLUMNS = [
    "id",
    "campaign_id",
    "code",
    "customer_id",
    "holder_seq",
    "status",
    "slot",
    "reserved_amount",
    "funder_reserved",
    "valid_from",
    "valid_until",
    "issued_at",
    "batch_id",
]
_NEXT_CHUNK = (
    "SELECT row_numbers, customer_ids, ARRAY(SELECT u.n::integer "
    "FROM unnest(customer_ids) WITH ORDINALITY AS u(id, n) ORDER BY u.id), last_row "
    "FROM issue_batch_chunk WHERE batch_id = $1 AND last_row > $2 ORDER BY chunk_no LIMIT 1"
)

_HOLDINGS = (
    "SELECT customer_id, count(*) FILTER (WHERE status <> 'void'), max(holder_seq) "
    "FROM coupon WHERE campaign_id = $1 AND customer_id = ANY($2::uuid[]) GROUP BY customer_id"
)
_LOCK_SLOTS = (
    "SELECT slot, remaining_quantity, remaining_budget, funder_remaining, funder_held, claimed "
    "FROM claim_slot WHERE campaign_id = $1 ORDER BY slot FOR UPDATE"
)
_UPDATE_SLOT = (
    "UPDATE claim_slot SET remaining_quantity = $3, remaining_budget = $4, "
    "funder_remaining = $5::bigint[], funder_held = $6::bigint[], claimed = claimed + $7 "
    "WHERE campaign_id = $1 AND slot = $2"
)
_DROP_REFUSED = (
    "UPDATE issue_batch_chunk k SET (row_numbers, customer_ids) = ("
    "SELECT coalesce(array_agg(u.r ORDER BY u.r), '{}'), "
    "coalesce(array_agg(u.c ORDER BY u.r), '{}') "
    "FROM unnest(k.row_numbers, k.customer_ids) AS u(r, c) WHERE u.r <> ALL($2::integer[])"
    ") WHERE k.batch_id = $1 AND k.row_numbers && $2::integer[]"
)


@dataclass(frozen=True, slots=True)
class IssuedCoupon:
    row_number: int
    customer_id: uuid.UUID
    code: str
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class BatchProgress:
    batch_id: uuid.UUID
    status: str
    total: int
    issued: int
    rejected: int

    @property
    def remaining(self) -> int:
        return max(self.total - self.issued - self.rejected, 0)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": str(self.batch_id),
            "status": self.status,
            "total": self.total,
            "issued": self.issued,
            "rejected": self.rejected,
            "remaining": self.remaining,
        }


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """What a chunk is about to commit (given to the `before_commit` test hook)."""

    batch_id: uuid.UUID
    number: int  # 1 for the first chunk of this run
    issued: int
    refused: int


Notifier = Callable[[Campaign, Sequence[IssuedCoupon]], Awaitable[None]]
ProgressHook = Callable[[BatchProgress], None]
ChunkHook = Callable[[ChunkInfo], Awaitable[None]]


@dataclass(slots=True)
class _Chunk:
    progress: BatchProgress
    coupons: list[IssuedCoupon]
    campaign: Campaign | None


def _progress(batch: IssueBatch) -> BatchProgress:
    return BatchProgress(batch.id, batch.status, batch.total, batch.issued, batch.rejected)


def _stop(batch: IssueBatch, status: str, now: datetime, error: dict[str, Any] | None) -> None:
    batch.status, batch.finished_at = status, now
    if error is not None:
        # Batch-level errors are few and always kept, even past the cap on row errors.
        batch.errors = [*batch.errors, error]


async def issue_batch(
    session: AsyncSession,
    batch_id: uuid.UUID,
    *,
    chunk_size: int = CHUNK_SIZE,
    max_chunks: int | None = None,
    on_progress: ProgressHook | None = None,
    before_commit: ChunkHook | None = None,
    notifier: Notifier | None = None,
) -> BatchProgress:
    """Issue the batch's coupons, chunk by chunk, until it is done (or `max_chunks` chunks).

    Safe to run again, or twice at once: chunks are serialized on the batch row and each
    takes the next targets without a coupon. A pending or running batch resumes; a finished
    one is left alone.
    """
    number = 0
    while max_chunks is None or number < max_chunks:
        number += 1
        run = _Run(batch_id, chunk_size, number, before_commit, keep_coupons=notifier is not None)
        with _gc_paused():
            chunk = await _issue_chunk_with_retries(session, run)
        if notifier is not None and chunk.coupons and chunk.campaign is not None:
            await notifier(chunk.campaign, chunk.coupons)
        if on_progress is not None:
            on_progress(chunk.progress)
        if chunk.progress.finished:
            log.info("issuance_finished", **chunk.progress.as_dict())
            return chunk.progress
    batch = await session.get_one(IssueBatch, batch_id, populate_existing=True)
    await session.commit()  # a read only: a rollback would expire the caller's objects
    return _progress(batch)


@dataclass(frozen=True, slots=True)
class _Run:
    batch_id: uuid.UUID
    chunk_size: int
    number: int  # of the chunk in this run, from 1
    before_commit: ChunkHook | None
    keep_coupons: bool  # for the notifier


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a chunk builds its rows: the hundreds of thousands of
    short-lived tuples would trigger collections that walk the whole heap again and again
    (about a tenth of the run time), and they hold no cycles (reference counting frees them)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def _issue_chunk_with_retries(session: AsyncSession, run: _Run) -> _Chunk:
    batch_id = run.batch_id
    for attempt in range(1, CHUNK_ATTEMPTS + 1):
        try:
            return await _issue_chunk(session, run)
        except (asyncpg.UniqueViolationError, IntegrityError) as exc:
            # A code already taken (65 random bits: next to never) or a holder_seq a
            # concurrent claim took first: nothing of the chunk was kept; do it again.
            await session.rollback()
            if attempt == CHUNK_ATTEMPTS:
                raise
            log.warning("issuance_chunk_conflict", batch_id=str(batch_id), error=str(exc))
        except BaseException:
            with contextlib.suppress(Exception):
                await session.rollback()
            raise
    raise AssertionError("unreachable")


async def _issue_chunk(session: AsyncSession, run: _Run) -> _Chunk:
    batch_id, chunk_size, number = run.batch_id, run.chunk_size, run.number
    now = utcnow()
    batch = (
        await session.execute(
            select(IssueBatch)
            .where(col(IssueBatch.id) == batch_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if batch is None:
        raise IssuanceNotFound()
    if batch.status in FINISHED:
        await session.commit()  # nothing changed; releases the lock, keeps loaded objects
        return _Chunk(_progress(batch), [], None)
    # FOR SHARE: the campaign cannot be paused or ended while a chunk is being written.
    campaign = (
        await session.execute(
            select(Campaign)
            .where(col(Campaign.id) == batch.campaign_id)
            .with_for_update(read=True)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if batch.status == "pending":
        batch.status, batch.started_at = "running", now
    driver = await driver_connection(session)
    targets = await _next_targets(driver, batch.id, batch.done_through_row, chunk_size)
    rows, customers = targets.rows, targets.customers
    if not rows:
        _stop(batch, "completed", now, None)
        await commit(session)
        return _Chunk(_progress(batch), [], None)
    if campaign.status != "active" or not campaign.starts_at <= now < campaign.ends_at:
        error = row_error(
            None,
            None,
            BatchError.CAMPAIGN_NOT_ACTIVE,
            f"The campaign is {campaign.status}; the rows left got no coupon",
        )
        _stop(batch, "failed", now, error)
        await commit(session)
        return _Chunk(_progress(batch), [], None)

    # The slots, locked: no claim can commit a coupon of the campaign until this chunk does.
    locked = await driver.fetch(_LOCK_SLOTS, campaign.id)
    rooms = [SlotRoom(r[0], r[1], r[2], list(r[3]), list(r[4])) for r in locked]
    # The per-customer limit: a customer's coupons in this campaign, void ones aside. When
    # every coupon the campaign ever gave out is this batch's (the slots count them all), the
    # chunk's customers hold none: a batch names each customer once.
    given_out = sum(r[5] for r in locked)
    holdings = (
        {r[0]: (r[1], r[2]) for r in await driver.fetch(_HOLDINGS, campaign.id, customers)}
        if given_out != batch.issued
        else {}
    )
    limit = campaign.per_customer_limit
    if holdings:
        eligible = [i for i, c in enumerate(customers) if holdings.get(c, (0, 0))[0] < limit]
        seqs = [(holdings.get(customers[i], (0, 0))[1] or 0) + 1 for i in eligible]
    else:
        eligible, seqs = list(range(len(customers))), [1] * len(customers)

    offer = domain.offer_from_json(campaign.offer)
    reservation = domain.max_discount(offer)
    funding = await funding_of(session, campaign.id)
    parts = slots.funder_reservations(reservation, funding.shares_bp)
    plan = CapacityPlan(0, None, [], [])
    if eligible:
        plan = plan_capacity(rooms, len(eligible), reservation, parts)
    n = plan.count
    # Rows up to the first eligible one that did not fit are settled in this chunk.
    end = eligible[n] if n < len(eligible) else len(rows)
    issued_index = eligible[:n]
    refused = (
        [i for i in range(end) if holdings.get(customers[i], (0, 0))[0] >= limit]
        if holdings
        else []
    )

    validity = domain.coupon_validity(
        offer, claimed_at=now, campaign_ends_at=campaign.ends_at, timezone=campaign.timezone
    )
    if n and validity.ends_at <= validity.starts_at:
        error = row_error(
            None, None, BatchError.VALIDITY_OVER, "Coupons issued now would already be expired"
        )
        _stop(batch, "failed", now, error)
        await commit(session)
        return _Chunk(_progress(batch), [], None)

    coupons: list[IssuedCoupon] = []
    if n:
        await driver.executemany(
            _UPDATE_SLOT,
            [
                (campaign.id, r.slot, r.quantity, r.budget, r.funders, r.held, charged)
                for r, charged in zip(plan.after, plan.per_slot, strict=True)
            ],
        )
        # Codes ascending, and customers ascending when the chunk is a whole stored one
        # issued in full: the COPY then meets the code and customer indexes in key order.
        # (Measured at 200,000 coupons: a quarter less PostgreSQL CPU than in random order.)
        new_codes = ascending(codes_packed(n), _LENGTH)
        if targets.by_customer is not None and n == len(rows) and not holdings:
            issued_index = targets.by_customer
        issued_customers = [customers[i] for i in issued_index]
        stream = pgcopy.encode_rows(
            n,
            [
                pgcopy.Packed(16, uuid7_packed(n)),
                pgcopy.Const(campaign.id.bytes),
                pgcopy.Packed(_LENGTH, new_codes),
                pgcopy.Packed(16, b"".join(c.bytes for c in issued_customers)),
                pgcopy.Packed(4, pgcopy.packed_int4(seqs[:n]))
                if holdings
                else pgcopy.Const(pgcopy.int4(1)),
                pgcopy.Const(pgcopy.text("issued")),
                pgcopy.Packed(
                    4,
                    b"".join(
                        pgcopy.int4(r.slot) * c
                        for r, c in zip(plan.after, plan.per_slot, strict=True)
                    ),
                ),
                pgcopy.Const(pgcopy.int8(reservation)),
                pgcopy.Const(pgcopy.int8_array(parts)),
                pgcopy.Const(pgcopy.timestamptz(validity.starts_at)),
                pgcopy.Const(pgcopy.timestamptz(validity.ends_at)),
                pgcopy.Const(pgcopy.timestamptz(now)),
                pgcopy.Const(batch.id.bytes),
            ],
        )
        await driver.copy_to_table("coupon", source=stream, columns=COUPON_COLUMNS, format="binary")
        await figures.bump(
            session,
            campaign.id,
            figures.local_day(now, campaign.timezone),
            number,
            issued=n,
        )
        if run.keep_coupons:
            issued_rows = [rows[i] for i in issued_index]
            coupons = [
                IssuedCoupon(row, uuid.UUID(bytes=customer.bytes), code, validity.ends_at)
                for row, customer, code in zip(
                    issued_rows, issued_customers, unpack_codes(new_codes), strict=True
                )
            ]
    if refused:
        await driver.execute(_DROP_REFUSED, batch.id, [rows[i] for i in refused])
        room = MAX_STORED_ERRORS - len(batch.errors)
        if room > 0:
            batch.errors = [
                *batch.errors,
                *(
                    row_error(
                        rows[i],
                        str(customers[i]),
                        RowError.LIMIT_REACHED,
                        f"The customer already holds {limit} coupon(s) of this campaign",
                    )
                    for i in refused[:room]
                ),
            ]
    batch.issued += n
    batch.rejected += len(refused)
    if plan.shortfall is not None:
        left = batch.total - batch.issued - batch.rejected
        detail = (
            "Every coupon of the campaign is given out"
            if plan.shortfall is BatchError.SOLD_OUT
            else "The campaign's budget (or a funder's cap) is used up"
        )
        _stop(
            batch,
            "failed",
            now,
            row_error(None, None, plan.shortfall, f"{detail}: {left} rows left"),
        )
    elif len(rows) < chunk_size and end == len(rows):
        _stop(batch, "completed", now, None)
    if end:
        batch.done_through_row = rows[end - 1]
    if run.before_commit is not None:
        await run.before_commit(ChunkInfo(batch.id, number, n, len(refused)))
    await commit(session)
    return _Chunk(_progress(batch), coupons, campaign)


@dataclass(frozen=True, slots=True)
class _Targets:
    rows: list[int]  # line numbers, ascending
    customers: list[Any]  # aligned with rows
    by_customer: list[int] | None  # indexes into both, by customer id (a whole stored chunk)


async def _next_targets(
    driver: asyncpg.Connection, batch_id: uuid.UUID, after_row: int, wanted: int
) -> _Targets:
    """Up to `wanted` targets after line `after_row`, in line order, read from as many stored
    chunks as it takes (one when the job's chunks are the upload's). When they are exactly
    one stored chunk, also their order by customer id (sorted by PostgreSQL)."""
    rows: list[int] = []
    customers: list[Any] = []
    order: list[int] | None = None
    while len(rows) < wanted:
        chunk = await driver.fetchrow(_NEXT_CHUNK, batch_id, after_row)
        if chunk is None:
            break
        numbers, ids = chunk[0], chunk[1]
        start = bisect.bisect_right(numbers, after_row)
        stop = start + wanted - len(rows)
        if start == len(numbers):  # its rows after the cursor were all refused and dropped
            after_row = chunk[3]
            continue
        whole = not rows and start == 0 and stop >= len(numbers)
        rows += numbers[start:stop]
        customers += ids[start:stop]
        order = [i - 1 for i in chunk[2]] if whole else None
        after_row = rows[-1]
    return _Targets(rows, customers, order)


def ascending(packed: bytes, width: int) -> bytes:
    """Values of `width` bytes back to back, sorted."""
    return b"".join(sorted(packed[i : i + width] for i in range(0, len(packed), width)))


async def reopen_batch(session: AsyncSession, batch_id: uuid.UUID) -> BatchProgress:
    """Let a batch that stopped `failed` (the campaign was paused, or ran out of room) go on
    from its first target without a coupon when it is run again. Commits."""
    batch = (
        await session.execute(
            select(IssueBatch)
            .where(col(IssueBatch.id) == batch_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if batch is None:
        raise IssuanceNotFound()
    if batch.status == "failed":
        batch.status, batch.finished_at = "running", None
    progress = _progress(batch)
    await commit(session)
    return progress


# --- notifications ---------------------------------------------------------------------------


@dataclass(slots=True)
class NotifyTally:
    sent: int = 0
    failed: int = 0
    no_number: int = 0


def sms_notifier(
    settings: Settings, phone_of_row: Callable[[int], str | None], tally: NotifyTally
) -> Notifier:
    """Text each issued coupon to the number its upload line gave (numbers stay in memory)."""
    from coalition.platform.sms import mask_phone, sms_gateway

    gateway = sms_gateway(settings)

    async def notify(campaign: Campaign, issued: Sequence[IssuedCoupon]) -> None:
        for coupon in issued:
            phone = phone_of_row(coupon.row_number)
            if phone is None:
                tally.no_number += 1
                continue
            message = coupon_message(settings, campaign, coupon)
            try:
                await gateway.send(phone, message)
            except DomainError as exc:
                tally.failed += 1
                log.warning("issuance_sms_failed", to=mask_phone(phone), error=exc.detail)
            else:
                tally.sent += 1

    return notify


def coupon_message(settings: Settings, campaign: Campaign, coupon: IssuedCoupon) -> str:
    until = figures.local_day(coupon.valid_until, campaign.timezone).isoformat()
    shown = codes.display(coupon.code, campaign.code_prefix)
    url = qr.coupon_url(settings.public_url, coupon.code)
    return f"{campaign.name}: your coupon {shown}, valid until {until}. {url}"


# --- reading progress ------------------------------------------------------------------------


async def get_issuance(
    session: AsyncSession, principal: Principal, batch_id: uuid.UUID
) -> IssueBatch:
    batch = await session.get(IssueBatch, batch_id)
    if batch is None or not principal.may_access(batch.org_id):
        raise IssuanceNotFound()
    return batch


async def list_issuances(
    session: AsyncSession,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    limit: int,
    offset: int,
) -> tuple[list[IssueBatch], int]:
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None or not principal.may_access(campaign.owner_org_id):
        raise NotFound("Campaign not found")
    query = select(IssueBatch).where(col(IssueBatch.campaign_id) == campaign_id)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (
        (
            await session.execute(
                query.order_by(col(IssueBatch.created_at).desc(), col(IssueBatch.id))
                .limit(limit)
                .offset(offset)
            )
        )
        .scalars()
        .all()
    )
    return list(rows), int(total)


def _summary_fields(batch: IssueBatch) -> dict[str, Any]:
    done = batch.issued + batch.rejected
    return {
        "id": batch.id,
        "campaign_id": batch.campaign_id,
        "source": batch.source,
        "status": batch.status,
        "notify": batch.notify,
        "total": batch.total,
        "issued": batch.issued,
        "rejected": batch.rejected,
        "remaining": max(batch.total - done, 0),
        "percent": round(100.0 * done / batch.total, 2) if batch.total else 100.0,
        "created_at": batch.created_at,
        "started_at": batch.started_at,
        "finished_at": batch.finished_at,
    }


def issuance_summary(batch: IssueBatch) -> IssuanceSummary:
    return IssuanceSummary(**_summary_fields(batch))


def issuance_read(
    batch: IssueBatch, *, errors_offset: int = 0, errors_limit: int = 100
) -> IssuanceRead:
    page = batch.errors[errors_offset : errors_offset + errors_limit]
    row_errors = sum(1 for e in batch.errors if e.get("line") is not None)
    return IssuanceRead(
        **_summary_fields(batch),
        errors=[
            IssuanceRowError(
                line=e.get("line"),
                value=e.get("value"),
                reason=str(e.get("reason")),
                detail=str(e.get("detail", "")),
            )
            for e in page
        ],
        errors_offset=errors_offset,
        errors_limit=errors_limit,
        errors_stored=len(batch.errors),
        errors_truncated=batch.rejected > row_errors,
    )


def error_counts(errors: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Stored errors per reason (for summaries)."""
    counts: dict[str, int] = {}
    for entry in errors:
        reason = str(entry.get("reason"))
        counts[reason] = counts.get(reason, 0) + 1
    return counts
