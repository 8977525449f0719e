"""Tables of the campaigns domain: joint campaigns and their versioned terms, participants,
customers, coupons, claim slots, issuance batches and daily figures.

Coupons are keyed so they can be partitioned by campaign (every coupon row carries
`campaign_id`; its unique code is global for lookup at the till).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from coalition.merchants.models import fk, jsonb, org_fk, text_array
from coalition.platform.db import id_field, timestamp_field

CAMPAIGN_STATUSES = ("draft", "proposed", "approved", "active", "paused", "ended", "cancelled")
AUDIENCES = ("open", "segment", "targeted")
COUPON_STATUSES = ("issued", "claimed", "redeemed", "expired", "void")
BATCH_STATUSES = ("pending", "running", "completed", "failed")
SLOTS = 64  # claim counters per campaign: no single hot row on the claim path


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def money_column(*, nullable: bool = False) -> Any:
    return Field(default=None if nullable else 0, sa_column=Column(BigInteger, nullable=nullable))


class Campaign(SQLModel, table=True):
    __tablename__ = "campaign"
    __table_args__ = (
        CheckConstraint(_in("status", CAMPAIGN_STATUSES), name="status"),
        CheckConstraint(_in("audience", AUDIENCES), name="audience"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint("ends_at > starts_at", name="schedule"),
        CheckConstraint("total_quantity > 0", name="quantity"),
        CheckConstraint("per_customer_limit >= 1", name="per_customer_limit"),
        CheckConstraint(
            "per_customer_daily_limit IS NULL OR per_customer_daily_limit >= 1",
            name="per_customer_daily_limit",
        ),
    )

    id: uuid.UUID = id_field()
    owner_org_id: uuid.UUID = org_fk()
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    status: str = Field(default="draft", max_length=16, index=True)
    status_reason: str | None = Field(default=None, max_length=500)
    currency: str = Field(max_length=3)
    timezone: str = Field(max_length=64)
    starts_at: datetime = timestamp_field()
    ends_at: datetime = timestamp_field()
    code_prefix: str | None = Field(default=None, max_length=8)
    offer: dict[str, Any] = jsonb()  # the offer rule (see campaigns/domain.py `Offer`)
    audience: str = Field(default="open", max_length=16)
    audience_min_tier: int | None = None
    audience_max_tier: int | None = None
    audience_tags: list[str] = text_array()
    audience_on_network_only: bool = False
    total_quantity: int
    per_customer_limit: int = 1
    per_customer_daily_limit: int | None = None
    reversal_window_days: int = 30
    total_budget: int = money_column()
    fee_bp: int = 0
    fee_fixed: int = money_column()
    fee_payer: str = Field(default="redeeming_merchant", max_length=32)
    settlement_cycle: str = Field(default="weekly", max_length=16)
    terms_version: int = 0  # the version participants must accept (0: never proposed)
    created_by: uuid.UUID | None = fk("app_user.id", index=False, nullable=True)
    created_at: datetime = timestamp_field(now=True)
    proposed_at: datetime | None = timestamp_field(nullable=True)
    approved_at: datetime | None = timestamp_field(nullable=True)
    activated_at: datetime | None = timestamp_field(nullable=True)
    ended_at: datetime | None = timestamp_field(nullable=True)


class CampaignParticipant(SQLModel, table=True):
    """An organization funding the campaign (the owner included), with its share and cap."""

    __tablename__ = "campaign_participant"
    __table_args__ = (
        PrimaryKeyConstraint("campaign_id", "org_id"),
        CheckConstraint("share_bp BETWEEN 0 AND 10000", name="share_bp"),
        CheckConstraint("budget_cap IS NULL OR budget_cap > 0", name="budget_cap"),
    )

    campaign_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    org_id: uuid.UUID = org_fk()
    position: int  # funding order: ties in the split remainder go to the lower position
    share_bp: int
    budget_cap: int | None = money_column(nullable=True)
    accepted_version: int | None = None
    accepted_at: datetime | None = timestamp_field(nullable=True)
    accepted_by: uuid.UUID | None = None
    declined_at: datetime | None = timestamp_field(nullable=True)
    decline_reason: str | None = Field(default=None, max_length=500)


class CampaignTermsVersion(SQLModel, table=True):
    """The exact terms proposed as version N, frozen; acceptances name a version."""

    __tablename__ = "campaign_terms_version"
    __table_args__ = (UniqueConstraint("campaign_id", "version"),)

    id: uuid.UUID = id_field()
    campaign_id: uuid.UUID = fk("campaign.id", index=False, cascade=True)
    version: int
    terms: dict[str, Any] = jsonb()
    proposed_by: uuid.UUID | None = None
    proposed_at: datetime = timestamp_field(now=True)


class CampaignStore(SQLModel, table=True):
    """Redeemable stores when the campaign names a list (none: every participant's store)."""

    __tablename__ = "campaign_store"
    __table_args__ = (PrimaryKeyConstraint("campaign_id", "store_id"),)

    campaign_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    store_id: uuid.UUID = fk("store.id")


class CampaignTarget(SQLModel, table=True):
    """A customer on a targeted campaign's list."""

    __tablename__ = "campaign_target"
    __table_args__ = (PrimaryKeyConstraint("campaign_id", "customer_id"),)

    campaign_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    customer_id: uuid.UUID = fk("customer.id", index=False)


class ClaimSlot(SQLModel, table=True):
    """One of a campaign's SLOTS counters of what is left to claim. Capacity is spread over
    the slots at activation; a claim takes from one slot, so claims do not queue on one row.
    The checks make overselling impossible whatever the application does."""

    __tablename__ = "claim_slot"
    __table_args__ = (
        PrimaryKeyConstraint("campaign_id", "slot"),
        CheckConstraint("remaining_quantity >= 0", name="quantity"),
        CheckConstraint("remaining_budget >= 0", name="budget"),
        CheckConstraint("0 <= ALL(funder_remaining)", name="funders"),
    )

    campaign_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    slot: int
    remaining_quantity: int
    remaining_budget: int = money_column()
    # What each funder (by participant position) may still reserve; NULL = no cap.
    funder_remaining: list[int | None] = Field(
        default_factory=list, sa_column=Column(ARRAY(BigInteger), nullable=False)
    )
    # What coupons claimed from this slot hold against each funder right now.
    funder_held: list[int] = Field(
        default_factory=list, sa_column=Column(ARRAY(BigInteger), nullable=False)
    )
    claimed: int = 0
    released: int = 0


class Customer(SQLModel, table=True):
    """A carrier subscriber, known by a keyed hash of their phone number (never the number)."""

    __tablename__ = "customer"
    __table_args__ = (CheckConstraint("tier BETWEEN 1 AND 7", name="tier"),)

    id: uuid.UUID = id_field()
    external_id_hash: str = Field(max_length=64, unique=True)
    phone_hint: str | None = Field(default=None, max_length=16)  # e.g. "*******8888"
    tier: int = 1
    tags: list[str] = text_array()
    on_network: bool = True
    created_at: datetime = timestamp_field(now=True)
    updated_at: datetime = timestamp_field(now=True)


class CustomerOtp(SQLModel, table=True):
    __tablename__ = "customer_otp"

    id: uuid.UUID = id_field()
    external_id_hash: str = Field(max_length=64, index=True)
    code_hash: str = Field(max_length=64)
    created_at: datetime = timestamp_field(now=True)
    expires_at: datetime = timestamp_field()
    attempts: int = 0
    used_at: datetime | None = timestamp_field(nullable=True)


class Coupon(SQLModel, table=True):
    """A coupon. Its indexes are the ones its queries need, and no more (bulk issuance writes
    a million at a time): the primary key (by id), the code (the till), the customer's n-th
    coupon of a campaign (the per-customer limit, and the wallet by its first column), the
    redeemable ones by validity (the expiry sweep), and by campaign and status (an ended
    campaign's release). No foreign keys: a per-row check costs bulk issuance as much as two
    indexes, and coupons are to be partitioned by campaign. The code paths that write coupons
    keep the references: a claim's customer comes from a verified token and its campaign is
    read in the same transaction; an issuance's targets are checked against `customer` at
    upload and its campaign row is held FOR SHARE while each chunk is written; customers and
    campaigns are never deleted."""

    __tablename__ = "coupon"
    __table_args__ = (
        CheckConstraint(_in("status", COUPON_STATUSES), name="status"),
        CheckConstraint("reserved_amount >= 0", name="reserved_amount"),
        CheckConstraint("valid_until > valid_from", name="validity"),
        # Exactly-once per customer limit: the n-th coupon of a customer in a campaign.
        UniqueConstraint("customer_id", "campaign_id", "holder_seq"),
        Index(
            "ix_coupon_expiry",
            "valid_until",
            postgresql_where=text("status IN ('issued', 'claimed')"),
        ),
        Index("ix_coupon_campaign_status", "campaign_id", "status"),
    )

    id: uuid.UUID = id_field()
    campaign_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    code: str = Field(max_length=16, unique=True)
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    holder_seq: int | None = None
    claim_day: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    status: str = Field(max_length=16)
    slot: int | None = None
    reserved_amount: int = money_column()
    funder_reserved: list[int] = Field(
        default_factory=list, sa_column=Column(ARRAY(BigInteger), nullable=False)
    )
    valid_from: datetime = timestamp_field()
    valid_until: datetime = timestamp_field()
    issued_at: datetime = timestamp_field(now=True)
    claimed_at: datetime | None = timestamp_field(nullable=True)
    redeemed_at: datetime | None = timestamp_field(nullable=True)
    released_at: datetime | None = timestamp_field(nullable=True)  # budget handed back
    # Set while an online checkout holds the coupon (see RedemptionHold): no other channel may
    # redeem or reserve it until then. A past value is a hold that lapsed (not yet released).
    held_until: datetime | None = timestamp_field(nullable=True)
    void_reason: str | None = Field(default=None, max_length=500)
    batch_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))


class IssueBatch(SQLModel, table=True):
    """A bulk issuance: targets uploaded, coupons written in chunks, resumable."""

    __tablename__ = "issue_batch"
    __table_args__ = (CheckConstraint(_in("status", BATCH_STATUSES), name="status"),)

    id: uuid.UUID = id_field()
    campaign_id: uuid.UUID = fk("campaign.id")
    org_id: uuid.UUID = org_fk(index=False)
    source: str = Field(max_length=16)  # csv | audience
    status: str = Field(default="pending", max_length=16)
    total: int = 0
    issued: int = 0
    rejected: int = 0
    # Every target up to this row number is settled (a coupon, or an error): each chunk moves
    # it in the transaction that writes its coupons, so a resumed run starts right after it.
    done_through_row: int = 0
    errors: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    notify: bool = False
    created_by: uuid.UUID | None = None
    created_at: datetime = timestamp_field(now=True)
    started_at: datetime | None = timestamp_field(nullable=True)
    finished_at: datetime | None = timestamp_field(nullable=True)


class IssueBatchChunk(SQLModel, table=True):
    """A batch's accepted targets in upload order, up to a chunk's worth per row: the line
    numbers (ascending) and their customers as two aligned arrays. One row per chunk instead
    of one per target: an upload of a million ids writes 40 rows. The batch's
    `done_through_row` says which are settled, and each issued coupon carries its `batch_id`."""

    __tablename__ = "issue_batch_chunk"
    __table_args__ = (
        PrimaryKeyConstraint("batch_id", "chunk_no"),
        CheckConstraint("cardinality(row_numbers) = cardinality(customer_ids)", name="aligned"),
    )

    batch_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("issue_batch.id", ondelete="CASCADE"), nullable=False)
    )
    chunk_no: int = Field(sa_column=Column(Integer, nullable=False))
    first_row: int
    last_row: int
    row_numbers: list[int] = Field(sa_column=Column(ARRAY(Integer), nullable=False))
    customer_ids: list[uuid.UUID] = Field(sa_column=Column(ARRAY(Uuid), nullable=False))


class CampaignDailyStat(SQLModel, table=True):
    """Figures per campaign per local day, kept per slot so writers do not contend; read sums."""

    __tablename__ = "campaign_daily_stat"
    __table_args__ = (PrimaryKeyConstraint("campaign_id", "day", "slot"),)

    campaign_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    day: date = Field(sa_column=Column(Date, nullable=False))
    slot: int
    issued: int = 0
    claimed: int = 0
    redeemed: int = 0
    expired: int = 0
    voided: int = 0
    discount: int = money_column()
    # What each funder's share of the standing discounts comes to, in participant order
    # (redemptions add their split, reversals take their slice back).
    funder_spent: list[int] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(BigInteger), nullable=False, server_default="{}"),
    )


# --- redemption ---------------------------------------------------------------------------------

REDEMPTION_STATUSES = ("completed", "partially_reversed", "reversed")
CHANNELS = ("pos", "online")


class Redemption(SQLModel, table=True):
    """A coupon used at a till (or online): the basket, the discount given, and the funding
    split frozen at that moment (what the ledger entry was built from).

    Exactly once: the unique partial index allows one standing (not fully reversed)
    redemption per coupon, so a fully reversed coupon can be redeemed again."""

    __tablename__ = "redemption"
    __table_args__ = (
        CheckConstraint(_in("status", REDEMPTION_STATUSES), name="status"),
        CheckConstraint(_in("channel", CHANNELS), name="channel"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint("basket_amount > 0", name="basket_amount"),
        CheckConstraint("discount BETWEEN 0 AND basket_amount", name="discount"),
        CheckConstraint("refunded_amount BETWEEN 0 AND basket_amount", name="refunded_amount"),
        CheckConstraint("discount_reversed BETWEEN 0 AND discount", name="discount_reversed"),
        Index(
            "uq_redemption_coupon_standing",
            "coupon_id",
            unique=True,
            postgresql_where=text("status <> 'reversed'"),
        ),
        CheckConstraint("channel = 'online' OR store_id IS NOT NULL", name="pos_store"),
        Index("ix_redemption_terminal_recent", "terminal_id", "redeemed_at"),
        Index("ix_redemption_campaign_recent", "campaign_id", "redeemed_at"),
        Index("ix_redemption_customer_recent", "customer_id", "redeemed_at"),
    )

    id: uuid.UUID = id_field()
    campaign_id: uuid.UUID = fk("campaign.id", index=False)
    coupon_id: uuid.UUID = fk("coupon.id", index=False)
    org_id: uuid.UUID = org_fk()  # the redeeming organization
    store_id: uuid.UUID | None = fk("store.id", nullable=True)  # None: online
    terminal_id: uuid.UUID | None = fk("terminal.id", index=False, nullable=True)
    api_key_id: uuid.UUID | None = fk("api_key.id", index=False, nullable=True)  # online
    # The coupon's holder when redeemed (the velocity rule looks across partners by it).
    customer_id: uuid.UUID | None = fk("customer.id", index=False, nullable=True)
    channel: str = Field(default="pos", max_length=16)
    currency: str = Field(max_length=3)
    basket_amount: int = money_column()
    discount: int = money_column()
    order_ref: str | None = Field(default=None, max_length=128)
    # RedemptionFunding as it was (funders, shares, fee rule, parties) plus the split and fee.
    funding: dict[str, Any] = jsonb()
    status: str = Field(default="completed", max_length=24)
    refunded_amount: int = money_column()  # cumulative
    discount_reversed: int = money_column()  # cumulative
    redeemed_at: datetime = timestamp_field()
    reversed_at: datetime | None = timestamp_field(nullable=True)


class RedemptionReversal(SQLModel, table=True):
    """A (partial) refund of a redeemed basket and the part of the discount it reversed."""

    __tablename__ = "redemption_reversal"
    __table_args__ = (
        CheckConstraint("refund_amount > 0", name="refund_amount"),
        CheckConstraint("discount_reversed >= 0", name="discount_reversed"),
    )

    id: uuid.UUID = id_field()
    redemption_id: uuid.UUID = fk("redemption.id")
    org_id: uuid.UUID = org_fk(index=False)
    terminal_id: uuid.UUID | None = fk("terminal.id", index=False, nullable=True)
    refund_amount: int = money_column()
    discount_reversed: int = money_column()  # this reversal's slice
    full: bool = False  # the basket is refunded in full after this one
    reason: str = Field(max_length=500)
    created_at: datetime = timestamp_field(now=True)


# --- online checkout: holds ----------------------------------------------------------------------

HOLD_STATUSES = ("held", "confirmed", "released", "expired")


class RedemptionHold(SQLModel, table=True):
    """An online checkout's reservation of a coupon: the discount quoted for the basket, held
    until `expires_at`, then confirmed (a redemption), released, or expired by the worker.

    One live hold per coupon: the unique partial index is the arbiter; the coupon row's
    `held_until` is what the other channels check under the coupon's row lock."""

    __tablename__ = "redemption_hold"
    __table_args__ = (
        CheckConstraint(_in("status", HOLD_STATUSES), name="status"),
        CheckConstraint("basket_amount > 0", name="basket_amount"),
        CheckConstraint("discount BETWEEN 0 AND basket_amount", name="discount"),
        CheckConstraint("expires_at > created_at", name="expiry"),
        Index(
            "uq_redemption_hold_live",
            "coupon_id",
            unique=True,
            postgresql_where=text("status = 'held'"),
        ),
        Index("ix_redemption_hold_expiry", "expires_at", postgresql_where=text("status = 'held'")),
    )

    id: uuid.UUID = id_field()
    coupon_id: uuid.UUID = fk("coupon.id", index=False)
    campaign_id: uuid.UUID = fk("campaign.id", index=False)
    org_id: uuid.UUID = org_fk()  # the merchant whose checkout holds it
    api_key_id: uuid.UUID | None = fk("api_key.id", index=False, nullable=True)
    currency: str = Field(max_length=3)
    basket_amount: int = money_column()
    discount: int = money_column()
    order_ref: str = Field(max_length=128)
    status: str = Field(default="held", max_length=16)
    created_at: datetime = timestamp_field(now=True)
    expires_at: datetime = timestamp_field()
    finished_at: datetime | None = timestamp_field(nullable=True)  # confirmed, released, expired
    redemption_id: uuid.UUID | None = fk("redemption.id", index=False, nullable=True)


# --- fraud and abuse: flags for review -----------------------------------------------------------

FLAG_STATUSES = ("open", "reviewed")


class RedemptionFlag(SQLModel, table=True):
    """A redemption flagged for review (never blocked): e.g. the same customer redeeming at
    several partners within a few minutes. Written in the redemption's own transaction."""

    __tablename__ = "redemption_flag"
    __table_args__ = (
        CheckConstraint(_in("status", FLAG_STATUSES), name="status"),
        Index("ix_redemption_flag_open", "status", "created_at"),
    )

    id: uuid.UUID = id_field()
    redemption_id: uuid.UUID = fk("redemption.id")
    rule: str = Field(max_length=32)  # "velocity"
    customer_id: uuid.UUID | None = fk("customer.id", index=False, nullable=True)
    # The redeeming organizations involved (this redemption's first), for tenancy.
    org_ids: list[uuid.UUID] = Field(
        default_factory=list, sa_column=Column(ARRAY(Uuid), nullable=False)
    )
    # The customer's redemptions in the window that tripped the rule (this one included).
    redemption_ids: list[uuid.UUID] = Field(
        default_factory=list, sa_column=Column(ARRAY(Uuid), nullable=False)
    )
    detail: dict[str, Any] = jsonb()  # e.g. {"window_minutes": 30, "partners": 3}
    status: str = Field(default="open", max_length=16)
    created_at: datetime = timestamp_field(now=True)
    reviewed_at: datetime | None = timestamp_field(nullable=True)
    reviewed_by: uuid.UUID | None = fk("app_user.id", index=False, nullable=True)
    review_note: str | None = Field(default=None, max_length=1000)
