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
from datetime import date, datetime
from typing import Any, TypeVar

import asyncpg

from coalition.campaigns.models import Campaign, Coupon, Redemption
from coalition.campaigns.services.figures import ADD_FUNDER_SPENT

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
  ) END AS x_recent
FROM coupon c JOIN campaign k ON k.id = c.campaign_id
WHERE c.{by} = $1{" FOR UPDATE OF c" if lock else ""}
"""


LOAD = {(by, lock): _load_sql(by, lock) for by in ("code", "id") for lock in (False, True)}

INSERT_REDEMPTION = (
    f"INSERT INTO redemption ({', '.join(_REDEMPTION)}) "
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(_REDEMPTION) + 1))})"
)
REDEEM_COUPON = (
    "UPDATE coupon SET status = 'redeemed', redeemed_at = $2, held_until = NULL WHERE id = $1"
)
BUMP_REDEEMED = f"""
INSERT INTO campaign_daily_stat
  (campaign_id, day, slot, issued, claimed, redeemed, expired, voided, discount, funder_spent)
VALUES ($1, $2, $3, 0, 0, 1, 0, 0, $4, $5)
ON CONFLICT (campaign_id, day, slot) DO UPDATE SET
  redeemed = campaign_daily_stat.redeemed + 1,
  discount = campaign_daily_stat.discount + EXCLUDED.discount,
  funder_spent = {ADD_FUNDER_SPENT}
"""
STORE_RESPONSE = (
    "UPDATE idempotency_record SET status_code = $3, response = $4 WHERE scope = $1 AND key = $2"
)


ModelT = TypeVar("ModelT", Coupon, Campaign)


def _detached(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """A row as a detached instance, its columns set as loaded: 30 times cheaper than the
    model's constructor, which validates and records every attribute as a change."""
    instance: ModelT = model.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    instance.__dict__.update(values)
    return instance


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
) -> tuple[Coupon, Campaign, list[uuid.UUID], list[int], bool, uuid.UUID, list[uuid.UUID]] | None:
    by = "code" if code is not None else "id"
    row = await connection.fetchrow(
        LOAD[(by, lock)], code if code is not None else coupon_id, store_id, org_id, velocity_since
    )
    if row is None:
        return None
    coupon = _detached(Coupon, {name: row[name] for name in _COUPON})
    campaign = _detached(Campaign, {name: row[f"k_{name}"] for name in _CAMPAIGN})
    return (
        coupon,
        campaign,
        list(row["x_funders"] or []),
        list(row["x_shares"] or []),
        bool(row["x_store_ok"]),
        row["x_carrier"],
        list(row["x_recent"] or []),
    )


async def insert_redemption(connection: asyncpg.Connection, redemption: Redemption) -> None:
    values = [getattr(redemption, name) for name in _REDEMPTION]
    values[_REDEMPTION.index("funding")] = jsonb(redemption.funding)
    await connection.execute(INSERT_REDEMPTION, *values)


async def redeem_coupon(
    connection: asyncpg.Connection, coupon_id: uuid.UUID, now: datetime
) -> None:
    await connection.execute(REDEEM_COUPON, coupon_id, now)


async def bump_redeemed(
    connection: asyncpg.Connection,
    campaign_id: uuid.UUID,
    day: date,
    slot: int,
    discount: int,
    funder_spent: list[int],
) -> None:
    await connection.execute(BUMP_REDEEMED, campaign_id, day, slot, discount, funder_spent)


async def store_response(
    connection: asyncpg.Connection, scope: str, key: str, status_code: int, response: Any
) -> None:
    await connection.execute(STORE_RESPONSE, scope, key, status_code, jsonb(response))
