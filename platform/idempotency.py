"""Idempotency keys for POST endpoints that create money-relevant records.

The first request with a key stores its response in the same transaction as its effect; a
replay (same key, same body) gets that response again, marked as a replay; the same key with
another body is a 422. Concurrent requests with one key wait for the first to commit (the
unique key is the arbiter), then replay it.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Column, Integer, PrimaryKeyConstraint, Text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from coalition.platform.db import driver_connection, timestamp_field, utcnow
from coalition.platform.errors import ValidationFailed

KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
REPLAY_HEADER = "Idempotent-Replayed"


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_record"
    __table_args__ = (PrimaryKeyConstraint("scope", "key"),)

    scope: str = Field(sa_column=Column(Text, nullable=False))  # who: e.g. "customer:<id>"
    key: str = Field(sa_column=Column(Text, nullable=False))
    request_hash: str = Field(max_length=64)
    status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    created_at: datetime = timestamp_field(now=True)


class IdempotencyKeyReused(ValidationFailed):
    code, title = "idempotency_key_reused", "This Idempotency-Key was used with another request"


class IdempotencyKeyInvalid(ValidationFailed):
    code, title = "idempotency_key_invalid", "The Idempotency-Key header is not valid"


def request_fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str | None) -> str:
    if key is None or not KEY_PATTERN.match(key):
        raise IdempotencyKeyInvalid(
            "Send an Idempotency-Key header of 8 to 128 letters, digits or ._:-",
            field="Idempotency-Key",
        )
    return key


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    response: dict[str, Any]


async def begin(session: AsyncSession, *, scope: str, key: str, fingerprint: str) -> Replay | None:
    """Claim the key inside the current transaction, or return the stored response.

    Returns None when this request is the first: the caller does its work and calls `finish`
    before committing. If another request holds the key uncommitted, this waits for it.
    """
    # Plain SQL on the transaction's own asyncpg connection (`driver_connection` begins the
    # transaction): every money-moving POST runs this first, and SQLAlchemy's statement
    # building cost more CPU than the database's work. The claim and the look-up of an
    # existing record are one round trip when the key is new.
    connection = await driver_connection(session)
    row = await connection.fetchrow(CLAIM, scope, key, fingerprint, utcnow())
    if row is not None:
        return None
    replay = await stored_answer(connection, scope=scope, key=key, fingerprint=fingerprint)
    if replay is None:
        # The record that won the claim was deleted before we could read it (a purge).
        raise IdempotencyKeyReused("The first request with this key has not finished")
    return replay


async def stored_answer(
    connection: asyncpg.Connection, *, scope: str, key: str, fingerprint: str
) -> Replay | None:
    """The answer stored under the key for this request (None: the key is unused); the key
    used with another request is `IdempotencyKeyReused`. For paths that store the key with
    their effect, at the end of their transaction, rather than claiming it first: when they
    are refused, or their record meets the key's, they ask here, in a new transaction."""
    existing = await connection.fetchrow(EXISTING, scope, key)
    if existing is None:
        return None
    if existing["request_hash"] != fingerprint:
        raise IdempotencyKeyReused(field="Idempotency-Key")
    response = existing["response"]
    if existing["status_code"] is None or response is None:
        # Stored without a response: only possible if the first request is still running in
        # a transaction we could see, which the unique key prevents; treat as a conflict.
        raise IdempotencyKeyReused("The first request with this key has not finished")
    if isinstance(response, str | bytes):
        response = json.loads(response)
    return Replay(existing["status_code"], response)


CLAIM = (
    "INSERT INTO idempotency_record (scope, key, request_hash, created_at) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (scope, key) DO NOTHING RETURNING key"
)
EXISTING = (
    "SELECT request_hash, status_code, response FROM idempotency_record "
    "WHERE scope = $1 AND key = $2"
)


async def finish(
    session: AsyncSession, *, scope: str, key: str, status_code: int, response: dict[str, Any]
) -> None:
    """Store the response of the first request (in the transaction of its effect)."""
    await session.execute(
        update(IdempotencyRecord)
        .where(col(IdempotencyRecord.scope) == scope, col(IdempotencyRecord.key) == key)
        .values(status_code=status_code, response=response)
        .execution_options(synchronize_session=False)
    )


def new_scope(kind: str, subject: uuid.UUID) -> str:
    return f"{kind}:{subject}"
