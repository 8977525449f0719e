"""Claim slots: a campaign's remaining quantity and budget spread over SLOTS rows.

Each claim takes one unit of quantity and the coupon's reservation from one slot, so
concurrent claims spread over many rows instead of queueing on one. The table's CHECK
constraints are the arbiter: no code path can take a slot below zero. A claim tries a slot no
one else holds (SKIP LOCKED), then waits for any slot with room, and when the room left is
scattered over slots too small on their own, gathers it into one before giving up.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import asyncpg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.models import SLOTS, ClaimSlot
from coalition.platform.errors import DomainError

BASIS_POINTS = 10_000


def funder_reservations(reservation: int, shares_bp: Sequence[int]) -> list[int]:
    """What a coupon holds against each funder: the most its split can ever charge them.

    A redemption's split gives a funder at most ceil(discount * share) and a discount is at
    most the reservation, so holding the ceiling keeps every funder inside its cap exactly.
    """
    return [-(-reservation * bp // BASIS_POINTS) for bp in shares_bp]


def _spread(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


async def open_slots(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    *,
    quantity: int,
    budget: int,
    funder_caps: Sequence[int | None],
) -> None:
    """Spread the campaign's capacity over its slots (once; a second call changes nothing)."""
    quantities = _spread(quantity, SLOTS)
    budgets = _spread(budget, SLOTS)
    caps = [_spread(cap, SLOTS) if cap is not None else [None] * SLOTS for cap in funder_caps]
    await session.execute(
        insert(ClaimSlot)
        .values(
            [
                {
                    "campaign_id": campaign_id,
                    "slot": slot,
                    "remaining_quantity": quantities[slot],
                    "remaining_budget": budgets[slot],
                    "funder_remaining": [cap[slot] for cap in caps],
                    "funder_held": [0] * len(caps),
                    "claimed": 0,
                    "released": 0,
                }
                for slot in range(SLOTS)
            ]
        )
        .on_conflict_do_nothing(index_elements=["campaign_id", "slot"])
    )


@dataclass(frozen=True, slots=True)
class SoldOut:
    reason: str  # "quantity" | "budget"


def _room(funders: int) -> str:
    """A slot can take this claim: $2 is the amount, $4... each funder's part."""
    conditions = ["remaining_quantity > 0", "remaining_budget >= $2"]
    conditions += [
        f"(funder_remaining[{i + 1}] IS NULL OR funder_remaining[{i + 1}] >= ${i + 4})"
        for i in range(funders)
    ]
    return " AND ".join(conditions)


@lru_cache(maxsize=16)
def _take_sql(funders: int, *, pick: str) -> str:
    """Take from one slot. `pick` chooses it: a free slot with room (SKIP LOCKED, never
    waits), or one named slot (waits for that row only). A transaction so holds at most one
    slot row, so claims cannot deadlock on slots; the WHERE clause is re-checked once the row
    is ours, and the CHECK constraints stay the arbiter.

    Parameters: $1 campaign, $2 amount, $3 the slot to start from (or the slot, for "one"),
    $4... each funder's part."""
    new_funders = ", ".join(f"funder_remaining[{i + 1}] - ${i + 4}" for i in range(funders))
    held = ", ".join(f"funder_held[{i + 1}] + ${i + 4}" for i in range(funders))
    if pick == "free":
        chosen = f"""(
            SELECT slot FROM claim_slot
            WHERE campaign_id = $1 AND {_room(funders)}
            ORDER BY (slot - $3 + {SLOTS}) % {SLOTS}
            LIMIT 1 FOR UPDATE SKIP LOCKED
        )"""  # noqa: S608
    else:
        chosen = "$3"
    # Assembled from column positions only; every value is a bound parameter.
    return f"""
        UPDATE claim_slot SET
            remaining_quantity = remaining_quantity - 1,
            remaining_budget = remaining_budget - $2,
            funder_remaining = ARRAY[{new_funders}]::bigint[],
            funder_held = ARRAY[{held}]::bigint[],
            claimed = claimed + 1
        WHERE campaign_id = $1 AND slot = {chosen} AND {_room(funders)}
        RETURNING slot
    """  # noqa: S608


@lru_cache(maxsize=16)
def _rooms_sql(funders: int) -> str:
    """Without locking: how much is left, and the slots that could take this claim."""
    return f"""
        SELECT coalesce(sum(remaining_quantity), 0) AS quantity,
               coalesce(sum(remaining_budget), 0) AS budget,
               coalesce(array_agg(slot ORDER BY (slot - $3 + {SLOTS}) % {SLOTS})
                        FILTER (WHERE {_room(funders)}), '{{}}') AS open_slots
        FROM claim_slot WHERE campaign_id = $1
    """  # noqa: S608


WAIT_ATTEMPTS = 8


async def take(
    connection: asyncpg.Connection,
    campaign_id: uuid.UUID,
    amount: int,
    funder_parts: Sequence[int],
) -> int | SoldOut:
    """Take one coupon's worth from some slot; the slot number, or why there is no room.

    Runs on the claim's asyncpg connection, inside its transaction. First a slot nobody
    holds; else, if some slot still has room, wait for that one row; when the room left is
    scattered over slots too small on their own, gather it into one. A sold-out campaign is
    answered from an unlocked read, without waiting for anyone.
    """
    start = random.randrange(SLOTS)  # spreading load, not security
    funders = len(funder_parts)
    parts = list(funder_parts)
    free_sql, one_sql = _take_sql(funders, pick="free"), _take_sql(funders, pick="one")
    gathered = False
    for _ in range(WAIT_ATTEMPTS):
        slot = await connection.fetchval(free_sql, campaign_id, amount, start, *parts)
        if slot is not None:
            return int(slot)
        rooms = await connection.fetchrow(_rooms_sql(funders), campaign_id, amount, start, *parts)
        if rooms["quantity"] == 0:
            return SoldOut("quantity")
        if rooms["budget"] < amount:
            return SoldOut("budget")
        if not rooms["open_slots"]:
            if gathered or not await _gather(connection, campaign_id, funders):
                return SoldOut("budget")  # what is left cannot cover this coupon's share
            gathered = True
            continue
        slot = await connection.fetchval(
            one_sql, campaign_id, amount, rooms["open_slots"][0], *parts
        )
        if slot is not None:
            return int(slot)
    raise SlotsBusy()


class SlotsBusy(DomainError):
    """Every slot with room stayed taken by other claims: worth retrying in a moment."""

    status_code, code, title = 503, "claims_busy", "Too many claims at once; try again"


async def _gather(connection: asyncpg.Connection, campaign_id: uuid.UUID, funders: int) -> bool:
    """Move every slot's room into slot 0 (rare: only when a campaign runs nearly dry)."""
    rows = await connection.fetch(
        "SELECT slot, remaining_quantity, remaining_budget, funder_remaining "
        "FROM claim_slot WHERE campaign_id = $1 ORDER BY slot FOR UPDATE",
        campaign_id,
    )
    if len(rows) <= 1 or sum(r["remaining_quantity"] for r in rows[1:]) == 0:
        return False
    quantity = sum(r["remaining_quantity"] for r in rows)
    budget = sum(r["remaining_budget"] for r in rows)
    caps: list[int | None] = []
    for i in range(funders):
        values = [r["funder_remaining"][i] for r in rows]
        caps.append(None if any(v is None for v in values) else sum(values))
    # Emptied slots keep 0 for capped funders (NULL, unlimited, for the others), so a coupon
    # released into one of them later gives back exactly what it held.
    emptied = [None if cap is None else 0 for cap in caps]
    await connection.execute(
        "UPDATE claim_slot SET remaining_quantity = 0, remaining_budget = 0, "
        "funder_remaining = $2::bigint[] WHERE campaign_id = $1 AND slot > 0",
        campaign_id,
        emptied,
    )
    await connection.execute(
        "UPDATE claim_slot SET remaining_quantity = $2, remaining_budget = $3, "
        "funder_remaining = $4::bigint[] WHERE campaign_id = $1 AND slot = 0",
        campaign_id,
        quantity,
        budget,
        caps,
    )
    return True


async def give_back(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    slot: int,
    amount: int,
    funder_parts: Sequence[int],
    *,
    quantity: int,
    coupons: int = 1,
) -> None:
    """Hand back what `coupons` released coupons held (`amount` and `funder_parts` are their
    sums), and `quantity` units of stock to claim again (a void returns its unit; an expired
    coupon was given out and does not)."""
    new_funders = ", ".join(f"funder_remaining[{i + 1}] + :f{i}" for i in range(len(funder_parts)))
    held = ", ".join(f"funder_held[{i + 1}] - :f{i}" for i in range(len(funder_parts)))
    sql = (  # assembled from column positions only; every value is a bound parameter
        "UPDATE claim_slot SET remaining_quantity = remaining_quantity + :q, "  # noqa: S608
        "remaining_budget = remaining_budget + :amount, "
        f"funder_remaining = ARRAY[{new_funders}]::bigint[], "
        f"funder_held = ARRAY[{held}]::bigint[], released = released + :coupons "
        "WHERE campaign_id = :campaign AND slot = :slot"
    )
    await session.execute(
        text(sql),
        {
            "campaign": campaign_id,
            "slot": slot,
            "amount": amount,
            "q": quantity,
            "coupons": coupons,
            **{f"f{i}": part for i, part in enumerate(funder_parts)},
        },
    )
