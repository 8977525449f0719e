# ruff: noqa: S608 - the SQL is built at import from the models' column names, never input
"""The redemption's hot path in plain SQL on the session's own asyncpg connection.

Every redemption (POS or a confirmed online hold) runs these statements inside the
session's transaction (`platform.db.driver_connection` makes sure it has begun; the commit
goes through the session). Building,
compiling and caching SQLAlchemy statements and loading ORM rows cost several times the
database work here (see `bench/redeem.py`), so the statements are written once as SQL text
and sent by the driver, which keeps them prepared per connection. They do exactly what the
ORM versions did: the same rows, locks and constraints (the unique standing-redemption index,
the ledger's deferred balance trigger) guard them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, NamedTuple, TypeVar

import asyncpg

from coalition.campaigns.models import Campaign, Coupon, Redemption
from coalition.campaigns.services.figures import ADD_FUNDER_SPENT
from coalition.platform.db import utcnow
from coalition.settlement.services import ledger

REDEEMED_EVENT = "coupon.redeemed"
ReplyKind = Literal["claimed", "new"]

_COUPON = [c.key for c in Coupon.__table__.columns]  # type: ignore[attr-defined]
_CAMPAIGN = [c.key for c in Campaign.__table__.columns]  # type: ignore[attr-defined]
_REDEMPTION = [c.key for c in Redemption.__table__.columns]  # type: ignore[attr-defined]


def _load_sql(by: str, lock: bool) -> str:
    coupon = ", ".join(f"c.{name}" for name in _COUPON)
    campaign = ", ".join(f"k.{name} AS k_{name}" for name in _CAMPAIGN)
    # Built from the models' own column names at import, never from input.
    return f"""
SELECT {coupon}, {campaign},
  (SELECT array_agg(p.org_id ORDER BY p.position) FROM campaign_participant p
    WHERE p.campaign_id = c.campaign_id) AS x_funders,
  (SELECT array_agg(p.share_bp ORDER BY p.position) FROM campaign_participant p
    WHERE p.campaign_id = c.campaign_id) AS x_shares,
  CASE WHEN $2::uuid IS NULL THEN true ELSE EXISTS (
    SELECT 1 FROM store s WHERE s.id = $2::uuid AND s.status = 'active' AND s.org_id = $3::uuid
  ) END AS x_store_ok,
  (SELECT o.id FROM organization o WHERE o.kind = 'carrier' LIMIT 1) AS x_carrier,
  CASE WHEN $4::timestamptz IS NULL THEN NULL ELSE (
    SELECT array_agg(DISTINCT r.org_id) FROM redemption r
    WHERE r.customer_id = c.customer_id AND r.redeemed_at >= $4::timestamptz
      AND r.status <> 'reversed'
  ) END AS x_recent{_ENDPOINTS if lock else ""}
FROM coupon c JOIN campaign k ON k.id = c.campaign_id
WHERE c.{by} = $1{" FOR UPDATE OF c" if lock else ""}
"""


# When redeeming: the participants' webhook endpoints subscribed to `coupon.redeemed`, in the
# order `webhooks.SUBSCRIBED_ENDPOINTS` gives them.
_ENDPOINT_SET = f"""FROM webhook_endpoint w
    WHERE w.org_id IN (SELECT p.org_id FROM campaign_participant p
                       WHERE p.campaign_id = c.campaign_id)
      AND w.enabled AND ('{REDEEMED_EVENT}' = ANY(w.event_types) OR '*' = ANY(w.event_types))"""
_ENDPOINTS = f""",
  (SELECT array_agg(w.id ORDER BY w.org_id, w.id) {_ENDPOINT_SET}) AS x_endpoint_ids,
  (SELECT array_agg(w.org_id ORDER BY w.org_id, w.id) {_ENDPOINT_SET}) AS x_endpoint_orgs"""


LOAD = {(by, lock): _load_sql(by, lock) for by in ("code", "id") for lock in (False, True)}


def _record_sql(*, entry: bool, reply: ReplyKind | None) -> str:
    """One statement writing a redemption: the redemption row (`$1`.. in the model's column
    order), the coupon redeemed, the ledger entry and its postings (`entry`), the day's figure
    and the reply stored under the Idempotency-Key (`reply`: under the key claimed earlier in
    the transaction, or with the key, claimed here). It answers how many postings it
    wrote (those whose accounts exist; see `ledger.post_missing_postings`).

    The statement's parts see one snapshot and run in no set order, so none reads what another
    writes; the foreign-key checks and the unique standing-redemption index run on the rows
    of all of them, the balance of the entry at commit."""
    n = len(_REDEMPTION)
    column = {name: f"${i}" for i, name in enumerate(_REDEMPTION, start=1)}
    extra = iter(range(n + 1, n + 20))

    def param() -> str:
        return f"${next(extra)}"

    day, slot, funder_spent = param(), param(), param()
    parts = [
        f"redeemed AS (INSERT INTO redemption ({', '.join(_REDEMPTION)}) "
        f"VALUES ({', '.join(column.values())}) RETURNING id)",
        "coupon_row AS (UPDATE coupon SET status = 'redeemed', "
        f"redeemed_at = {column['redeemed_at']}, held_until = NULL "
        f"WHERE id = {column['coupon_id']} RETURNING id)",
        f"""figure AS (
INSERT INTO campaign_daily_stat
  (campaign_id, day, slot, issued, claimed, redeemed, expired, voided, discount, funder_spent)
VALUES ({column["campaign_id"]}, {day}, {slot}, 0, 0, 1, 0, 0, {column["discount"]}, {funder_spent})
ON CONFLICT (campaign_id, day, slot) DO UPDATE SET
  redeemed = campaign_daily_stat.redeemed + 1,
  discount = campaign_daily_stat.discount + EXCLUDED.discount,
  funder_spent = {ADD_FUNDER_SPENT}
RETURNING 1)""",
    ]
    written = "0"
    if entry:
        entry_id, key, now = param(), param(), param()
        ids, orgs, purposes, amounts = param(), param(), param(), param()
        parts.append(
            "entry AS ("
            + ledger.entry_sql(
                entry_id=entry_id,
                key=key,
                occurred_at=column["redeemed_at"],
                campaign_id=column["campaign_id"],
                redemption_id=column["id"],
                now=now,
            )
            + " RETURNING id)"
        )
        parts.append(
            "postings AS ("
            + ledger.postings_sql(
                entry_id=entry_id,
                ids=ids,
                org_ids=orgs,
                purposes=purposes,
                amounts=amounts,
                currency=f"{column['currency']}::text",
            )
            + " RETURNING 1)"
        )
        written = "(SELECT count(*) FROM postings)"
    if reply == "claimed":
        scope, key, status, response = param(), param(), param(), param()
        parts.append(
            f"reply AS (UPDATE idempotency_record SET status_code = {status}, "
            f"response = {response} WHERE scope = {scope} AND key = {key} RETURNING 1)"
        )
    elif reply == "new":
        scope, key, status, response, fingerprint = param(), param(), param(), param(), param()
        parts.append(
            "reply AS (INSERT INTO idempotency_record "
            "(scope, key, request_hash, status_code, response, created_at) VALUES "
            f"({scope}, {key}, {fingerprint}, {status}, {response}, "
            f"{column['redeemed_at']}) RETURNING 1)"
        )
    return f"WITH {', '.join(parts)} SELECT {written} AS postings"


RECORD = {
    (entry, reply): _record_sql(entry=entry, reply=reply)
    for entry in (False, True)
    for reply in (None, "claimed", "new")
}


# The velocity rule's redemptions of a customer since a time (this transaction's included), in
# the order they were made; and the flag written when the rule trips.
VELOCITY_REDEMPTIONS = """
SELECT id, org_id FROM redemption
WHERE customer_id = $1 AND redeemed_at >= $2 AND status <> 'reversed'
ORDER BY redeemed_at, id
"""
FLAG = """
INSERT INTO redemption_flag
  (id, redemption_id, rule, customer_id, org_ids, redemption_ids, detail, status, created_at)
VALUES ($1, $2, $3, $4, $5::uuid[], $6::uuid[], $7::jsonb, 'open', $8)
"""


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer stored under an Idempotency-Key with the redemption: under the key claimed
    earlier in the transaction (`fingerprint` None), or with the key and the request's
    fingerprint (the record's primary key then meets any earlier use of the key)."""

    scope: str
    key: str
    status_code: int
    response: dict[str, Any]
    fingerprint: str | None = None

    @property
    def kind(self) -> ReplyKind:
        return "claimed" if self.fingerprint is None else "new"


class Row(NamedTuple):
    """What `LOAD` reads; `endpoints` (id, organization) only when redeeming (locked)."""

    coupon: Coupon
    campaign: Campaign
    funders: list[uuid.UUID]
    shares_bp: list[int]
    store_ok: bool
    carrier_id: uuid.UUID
    recent: list[uuid.UUID]
    endpoints: list[tuple[uuid.UUID, uuid.UUID]] | None


ModelT = TypeVar("ModelT", Coupon, Campaign, Redemption)


def _detached(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """A row as a detached instance, its columns set as loaded: 30 times cheaper than the
    model's constructor, which validates and records every attribute as a change."""
    instance: ModelT = model.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    instance.__dict__.update(values)
    return instance


def new_redemption(**values: Any) -> Redemption:
    """A redemption row to write, every column given: built as a detached instance (the
    model's constructor validates and records every attribute as a change, several times the
    cost of the statement that writes it)."""
    if values.keys() != set(_REDEMPTION):
        raise TypeError(f"a redemption has the columns {sorted(_REDEMPTION)}")
    return _detached(Redemption, values)


def jsonb(value: Any) -> str:
    """JSON as the dialect's codec on this connection expects it: serialized."""
    return json.dumps(value, separators=(",", ":"))


async def load(
    connection: asyncpg.Connection,
    *,
    code: str | None,
    coupon_id: uuid.UUID | None,
    lock: bool,
    store_id: uuid.UUID | None,
    org_id: uuid.UUID,
    velocity_since: datetime | None,
) -> Row | None:
    by = "code" if code is not None else "id"
    row = await connection.fetchrow(
        LOAD[(by, lock)], code if code is not None else coupon_id, store_id, org_id, velocity_since
    )
    if row is None:
        return None
    coupon = _detached(Coupon, {name: row[name] for name in _COUPON})
    campaign = _detached(Campaign, {name: row[f"k_{name}"] for name in _CAMPAIGN})
    endpoints = (
        list(zip(row["x_endpoint_ids"] or [], row["x_endpoint_orgs"] or [], strict=True))
        if lock
        else None
    )
    return Row(
        coupon,
        campaign,
        list(row["x_funders"] or []),
        list(row["x_shares"] or []),
        bool(row["x_store_ok"]),
        row["x_carrier"],
        list(row["x_recent"] or []),
        endpoints,
    )


async def record(
    connection: asyncpg.Connection,
    redemption: Redemption,
    *,
    day: date,
    slot: int,
    funder_spent: list[int],
    entry: ledger.NewEntry | None,
    reply: Reply | None,
) -> None:
    """Write the redemption (see `RECORD`) in one round trip; a second one only when the entry
    needs an account that does not exist yet."""
    values: list[Any] = [getattr(redemption, name) for name in _REDEMPTION]
    values[_REDEMPTION.index("funding")] = jsonb(redemption.funding)
    values += [day, slot, funder_spent]
    if entry is not None:
        values += [
            entry.id,
            entry.idempotency_key,
            utcnow(),
            entry.posting_ids,
            entry.org_ids,
            entry.purposes,
            entry.amounts,
        ]
    if reply is not None:
        values += [reply.scope, reply.key, reply.status_code, jsonb(reply.response)]
        if reply.fingerprint is not None:
            values.append(reply.fingerprint)
    written = await connection.fetchval(
        RECORD[(entry is not None, None if reply is None else reply.kind)], *values
    )
    if entry is not None and written != len(entry.posting_ids):
        await ledger.post_missing_postings(connection, entry, written)
