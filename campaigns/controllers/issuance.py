"""HTTP API of bulk issuance (upload, progress, error report) and the `coalition issue` command."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated, Any

import click
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.schemas.issuance import (
    AudienceIssuanceRequest,
    IssuanceRead,
    IssuanceSummary,
)
from coalition.campaigns.services import issuance
from coalition.platform import idempotency
from coalition.platform.api import Limit, Offset, Page, decode_json
from coalition.platform.auth import Principal, role_guard
from coalition.platform.errors import DomainError, ValidationFailed
from coalition.platform.settings import Settings

MANAGERS = role_guard("admin", "marketing")
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
Notify = Annotated[bool, Parameter(query="notify")]
ErrorsLimit = Annotated[int, Parameter(query="errors_limit", ge=1, le=1000)]
ErrorsOffset = Annotated[int, Parameter(query="errors_offset", ge=0)]
IdempotencyKey = Annotated[str | None, Parameter(header="Idempotency-Key", required=False)]


class IssuanceController(Controller):
    path = "/api/v1"
    tags = ["issuance"]
    guards = [role_guard()]

    @post(
        "/campaigns/{campaign_id:uuid}/issuances",
        guards=[MANAGERS],
        status_code=HTTP_202_ACCEPTED,
        request_max_body_size=issuance.MAX_UPLOAD_BYTES,
    )
    async def create_issuance(
        self,
        campaign_id: uuid.UUID,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        settings: Settings,
        principal: Principal,
        notify: Notify = False,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[IssuanceRead]:
        """Issue coupons of a running campaign in bulk (its owner's admin or marketing).

        Send `text/csv` (up to 64 MiB): a header row naming a `customer_id` column (customer
        ids) or a `phone` column (numbers, matched by their keyed hash). Or send JSON
        `{"audience": true}` to target the campaign's whole audience. An optional
        `Idempotency-Key` makes a retried upload return the first batch (a replay is marked
        `Idempotent-Replayed: true`). Answers 202 with the
        batch (`pending`) and the error report of the upload (malformed values, unknown
        customers, duplicates, each with its line); a background job issues the coupons:
        follow it at `GET /api/v1/issuances/{id}`. `notify` is refused (422
        `notify_unavailable`): the platform keeps no phone numbers to text later.
        """
        media_type = request.content_type[0].lower()
        key = idempotency.check_key(idempotency_key) if idempotency_key is not None else None
        body = await request.body()
        if media_type in CSV_TYPES:
            created = await issuance.create_csv_issuance(
                session,
                settings,
                principal,
                campaign_id,
                body,
                notify=notify,
                idempotency_key=key,
            )
        elif media_type == "application/json":
            data = _audience_request(body)
            created = await issuance.create_audience_issuance(
                session, principal, campaign_id, notify=data.notify or notify, idempotency_key=key
            )
        else:
            raise HTTPException(
                status_code=415, detail="Send text/csv (a target list) or application/json"
            )
        headers = {idempotency.REPLAY_HEADER: "true"} if created.replayed else {}
        return Response(created.read, status_code=HTTP_202_ACCEPTED, headers=headers)

    @get("/campaigns/{campaign_id:uuid}/issuances")
    async def list_issuances(
        self,
        campaign_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
    ) -> Page[IssuanceSummary]:
        """A campaign's bulk issuances, newest first."""
        rows, total = await issuance.list_issuances(
            session, principal, campaign_id, limit=limit, offset=offset
        )
        return Page(
            items=[issuance.issuance_summary(b) for b in rows],
            limit=limit,
            offset=offset,
            total=total,
        )

    @get("/issuances/{batch_id:uuid}")
    async def get_issuance(
        self,
        batch_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        errors_limit: ErrorsLimit = 100,
        errors_offset: ErrorsOffset = 0,
    ) -> IssuanceRead:
        """Progress (status, total, issued, rejected, remaining, percent) and a page of the
        per-row error report (the first 1000 rejected rows by line are kept; all are counted)."""
        batch = await issuance.get_issuance(session, principal, batch_id)
        return issuance.issuance_read(batch, errors_offset=errors_offset, errors_limit=errors_limit)


def _audience_request(body: bytes) -> AudienceIssuanceRequest:
    data = decode_json(body, AudienceIssuanceRequest)
    if not data.audience:
        raise ValidationFailed(
            "Send `audience: true`, or upload a CSV (text/csv) of targets", field="audience"
        )
    return data


ROUTES = [IssuanceController]


# --- `coalition issue` -----------------------------------------------------------------------


@click.command("issue")
@click.argument("campaign_id", type=click.UUID)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option(
    "--notify",
    is_flag=True,
    help="Text each coupon to its holder (the file needs a `phone` column); implies --wait.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Issue in this process with a progress bar (otherwise the worker issues them).",
)
@click.option(
    "--resume",
    "resume_id",
    type=click.UUID,
    default=None,
    help="Continue this batch here (after an interruption) instead of uploading FILE again; "
    "implies --wait.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(1, 1_000_000),
    default=issuance.CHUNK_SIZE,
    show_default=True,
    help="Coupons per transaction.",
)
def issue_command(
    campaign_id: uuid.UUID,
    file: Path,
    notify: bool,
    wait: bool,
    resume_id: uuid.UUID | None,
    chunk_size: int,
) -> None:
    """Issue coupons of CAMPAIGN_ID to the customers listed in FILE (CSV).

    FILE has a header row naming a `customer_id` column (customer ids) or a `phone` column.
    Bad lines are reported (line, value, reason) and skipped. Without --wait the batch is
    queued for the worker (`coalition worker`); either way it is resumable: an interrupted
    run leaves whole chunks issued, and running the batch again continues without
    duplicates or gaps (`--resume BATCH_ID`). Uses DATABASE_URL.
    """
    from coalition.platform.settings import get_settings

    settings = get_settings()
    if not settings.database_url:
        raise click.ClickException("DATABASE_URL is not set")
    try:
        asyncio.run(
            _issue(
                settings,
                campaign_id,
                file,
                notify,
                wait or notify or resume_id is not None,
                resume_id,
                chunk_size,
            )
        )
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc


async def _issue(
    settings: Settings,
    campaign_id: uuid.UUID,
    file: Path,
    notify: bool,
    wait: bool,
    resume_id: uuid.UUID | None,
    chunk_size: int,
) -> None:
    from coalition.campaigns.models import IssueBatch
    from coalition.platform.db import make_engine, make_sessionmaker

    engine = make_engine(settings, pool_size=2)
    try:
        async with make_sessionmaker(engine)() as session:
            data = await asyncio.to_thread(file.read_bytes)
            phones: issuance.ParsedUpload | None = None
            if resume_id is None:
                upload = await issuance.create_operator_issuance(
                    session, settings, campaign_id, data, notify=notify
                )
                # Only texting needs the parsed file (its numbers); let the rest go.
                batch, phones = upload.batch, upload.parsed if notify else None
                del upload
                click.echo(
                    f"batch {batch.id}: {batch.total} rows, {batch.rejected} rejected, "
                    f"{batch.total - batch.rejected} to issue"
                )
            else:
                found = await session.get(IssueBatch, resume_id)
                if found is None or found.campaign_id != campaign_id:
                    raise click.ClickException(f"no batch {resume_id} for this campaign")
                batch = found
                await issuance.reopen_batch(session, batch.id)
                if notify:
                    phones = await asyncio.to_thread(
                        issuance.parse_upload,
                        data,
                        hash_phone=issuance.phone_hasher(settings),
                        keep_phones=True,
                    )
                click.echo(f"resuming batch {batch.id} ({batch.status})")
            await session.commit()
            del data
            if not wait:
                click.echo(f"queued for the worker; progress: GET /api/v1/issuances/{batch.id}")
                _print_report(batch)
                return
            tally = issuance.NotifyTally()
            notifier = (
                issuance.sms_notifier(settings, phones.phone_of_line, tally)
                if notify and phones is not None
                else None
            )
            done = batch.issued + batch.rejected
            with click.progressbar(length=max(batch.total, 1), label="issuing") as bar:
                bar.update(done)

                def advance(progress: issuance.BatchProgress) -> None:
                    nonlocal done
                    now_done = progress.issued + progress.rejected
                    bar.update(now_done - done)
                    done = now_done

                await issuance.issue_batch(
                    session,
                    batch.id,
                    chunk_size=chunk_size,
                    on_progress=advance,
                    notifier=notifier,
                )
            batch = await session.get_one(IssueBatch, batch.id, populate_existing=True)
            await session.commit()  # (a rollback would expire what is printed next)
            _print_report(batch)
            if notify:
                click.echo(
                    f"texts: {tally.sent} sent, {tally.failed} failed, "
                    f"{tally.no_number} without a number"
                )
    finally:
        await engine.dispose()


def _print_report(batch: Any) -> None:
    click.echo(
        f"status {batch.status}: {batch.issued} issued, {batch.rejected} rejected, "
        f"{max(batch.total - batch.issued - batch.rejected, 0)} remaining"
    )
    errors = list(batch.errors)
    if not errors:
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(issuance.error_counts(errors).items()))
    click.echo(f"errors (first {len(errors)} kept): {counts}")
    for entry in errors[:20]:
        where = f"line {entry['line']}" if entry.get("line") is not None else "batch"
        value = f" {entry['value']!r}" if entry.get("value") else ""
        click.echo(f"  {where}: {entry['reason']}{value} - {entry.get('detail', '')}")
    if len(errors) > 20:
        click.echo(f"  ... {len(errors) - 20} more: GET /api/v1/issuances/{batch.id}")
