"""Pure ledger rules: which postings a redemption and its reversals write. No I/O, no clock.

Accounts and signs
==================

The ledger records what organizations owe each other because of redemptions. Every posting is
signed from the point of view of the organization that owns the account: **debit positive**
(value in the organization's favour: others owe it) and **credit negative** (it owes). So an
organization's net position in a currency is simply the sum of its postings, and the sum over
every account of every organization is zero (each entry sums to zero).

- `partner_receivable` (the redeeming merchant's; debit-normal, +): partners owe it their
  share of discounts it gave.
- `partner_payable` (a funder's; credit-normal, -): it owes redeeming merchants its share.
- `fee_payable` (the fee payer's; credit-normal, -): it owes the carrier the platform fee.
- `fee_revenue` (the carrier's; debit-normal, +): platform fees earned, due from the payers.
- `payout_clearing`, `cash`: for payouts and collections, later.

`fee_revenue` is debit-normal here, unlike in the carrier's own books: this ledger holds
positions between organizations, and the fee is a claim of the carrier on the payer. Shown as
positive magnitudes, a merchant's net position is `receivable - payable - fee_payable`, and
the carrier's is `receivable - payable + fee_revenue` (the carrier funds and redeems like any
partner; its share and its fees sit in its own accounts).

A redemption
============

The merchant where a coupon is redeemed has already given the whole discount `D` at the till.
`D` is split over the funders in their split order with `split_by_basis_points` (parts `p_f`
sum to exactly `D`). For each funder `f` other than the redeeming merchant with `p_f > 0`:

    redeeming merchant  partner_receivable  +p_f
    funder f            partner_payable     -p_f

The redeeming merchant's own part is a cost it already bore: no posting. The platform fee
`F = percent_of(D, fee_bp) + fee_fixed` (0 when `D == 0`; the same as `campaigns.domain.fee_for`)
is owed by the payer (the redeeming merchant or the campaign owner) to the carrier:

    carrier             fee_revenue         +F
    payer               fee_payable         -F

unless the payer is the carrier itself (no posting). A redemption with nothing to post
(e.g. the redeeming merchant funds it all and pays no fee) writes no entry.

Reversals
=========

A reversal gives back part of the discount: `c` is the discount reversed so far, cumulatively,
after this reversal; each reversal writes the mirror image of the difference between the
positions at the previous and the new `c`. How much of each funder's part is reversed at `c`:

- Think of the discount's `D` units in one fixed order: funder `f`'s `j`-th unit sits at
  `(j - 1/2) / p_f` (ties to the funder listed first; Webster/Sainte-Laguë). The first `c` units
  of that order are the reversed ones. So the reversed part of a funder never decreases as `c`
  grows, never exceeds `p_f`, is exactly `p_f` when `c == D`, sums to exactly `c`, stays close
  to the pro-rata `c * p_f / D`, and does not depend on how the refunds were chunked.
  (Splitting the cumulative `c` with the largest-remainder rule would not do: it suffers the
  "Alabama paradox", so a funder's reversed part could shrink as `c` grows, or overshoot.)
- The fee is reversed pro rata, rounded half up: `round(F * c / D)`, so the whole fee comes
  back exactly when the redemption is fully reversed.
- From a refund: `discount_reversed_by_refund(D, basket, refunded)` is `round(D * r / basket)`
  (half up) of the cumulative refunded amount `r`, capped at `D`; the redemption service may
  also name the reversed discount itself.

After reversing `c`, each funder's net postings are exactly `p_f - reversed_f(c)`: its share of
the discount that still stands. A full reversal nets every account of the redemption to zero.
"""

from __future__ import annotations

import heapq
import uuid
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from coalition.platform.money import BASIS_POINTS, percent_of, split_by_basis_points

if TYPE_CHECKING:
    from coalition.campaigns.domain import Terms

Purpose = Literal[
    "partner_receivable", "partner_payable", "fee_payable", "fee_revenue", "payout_clearing", "cash"
]
EntryKind = Literal["redemption", "reversal", "fee", "transfer", "collection", "adjustment"]
FeePayer = Literal["redeeming_merchant", "owner"]

PARTNER_RECEIVABLE: Purpose = "partner_receivable"
PARTNER_PAYABLE: Purpose = "partner_payable"
FEE_PAYABLE: Purpose = "fee_payable"
FEE_REVENUE: Purpose = "fee_revenue"

K = TypeVar("K", bound=Hashable)


class Line(NamedTuple):
    """One posting to be: `amount` (debit positive, credit negative) on an organization's
    account for `purpose` (in the entry's currency)."""

    org_id: uuid.UUID
    purpose: Purpose
    amount: int


class UnbalancedEntry(ValueError):
    """Lines that do not sum to zero, or fewer than two of them: a bug, never user input."""


@dataclass(frozen=True, slots=True)
class FundingShare:
    org_id: uuid.UUID
    share_bp: int


@dataclass(frozen=True, slots=True)
class RedemptionFunding:
    """What the ledger needs of one redemption, frozen when it happened.

    `funders` are in split order (participant position: ties of the split remainder go to the
    earlier one) with shares summing to 10000. `fee_payer` names who pays the platform fee:
    the redeeming merchant or the campaign owner.
    """

    discount: int
    currency: str
    redeeming_org_id: uuid.UUID
    owner_org_id: uuid.UUID
    carrier_org_id: uuid.UUID
    funders: tuple[FundingShare, ...]
    fee_bp: int = 0
    fee_fixed: int = 0
    fee_payer: FeePayer = "redeeming_merchant"

    def __post_init__(self) -> None:
        if isinstance(self.discount, bool) or not isinstance(self.discount, int):
            raise TypeError("the discount is an integer in minor units")
        if self.discount < 0:
            raise ValueError("the discount cannot be negative")
        if len(self.currency) != 3 or not self.currency.isascii() or not self.currency.isupper():
            raise ValueError(f"not an ISO 4217 currency code: {self.currency!r}")
        if not self.funders:
            raise ValueError("at least one funder")
        if len({f.org_id for f in self.funders}) != len(self.funders):
            raise ValueError("each organization funds once")
        if any(f.share_bp < 0 for f in self.funders):
            raise ValueError("funding shares cannot be negative")
        if sum(f.share_bp for f in self.funders) != BASIS_POINTS:
            raise ValueError("funding shares must sum to 10000 basis points")
        if not 0 <= self.fee_bp <= BASIS_POINTS:
            raise ValueError("the fee is between 0 and 10000 basis points")
        if self.fee_fixed < 0:
            raise ValueError("the fixed fee cannot be negative")
        if self.fee_payer not in ("redeeming_merchant", "owner"):
            raise ValueError(f"unknown fee payer {self.fee_payer!r}")

    @classmethod
    def from_terms(
        cls,
        terms: Terms,
        *,
        discount: int,
        redeeming_org_id: uuid.UUID,
        owner_org_id: uuid.UUID,
        carrier_org_id: uuid.UUID,
    ) -> RedemptionFunding:
        """From a campaign's accepted terms (funders in position order)."""
        return cls(
            discount=discount,
            currency=terms.currency,
            redeeming_org_id=redeeming_org_id,
            owner_org_id=owner_org_id,
            carrier_org_id=carrier_org_id,
            funders=tuple(FundingShare(f.org_id, f.share_bp) for f in terms.funders),
            fee_bp=terms.fee_bp,
            fee_fixed=terms.fee_fixed,
            fee_payer=terms.fee_payer,
        )

    @property
    def parts(self) -> dict[uuid.UUID, int]:
        """Each funder's part of the discount, in split order; they sum to exactly `discount`."""
        return split_by_basis_points(self.discount, {f.org_id: f.share_bp for f in self.funders})

    @property
    def fee(self) -> int:
        return platform_fee(self.discount, self.fee_bp, self.fee_fixed)

    @property
    def fee_payer_org_id(self) -> uuid.UUID:
        return (
            self.redeeming_org_id if self.fee_payer == "redeeming_merchant" else self.owner_org_id
        )


def platform_fee(discount: int, fee_bp: int, fee_fixed: int) -> int:
    """`percent_of(discount, fee_bp) + fee_fixed`, nothing when there is no discount."""
    if discount <= 0:
        return 0
    return percent_of(discount, fee_bp) + fee_fixed


def _obligation_lines(
    funding: RedemptionFunding, parts: Mapping[uuid.UUID, int], fee: int
) -> list[Line]:
    """What `parts` of the discount and `fee` make the organizations owe each other."""
    lines: list[Line] = []
    for org_id, part in parts.items():
        if org_id == funding.redeeming_org_id or part == 0:
            continue
        lines.append(Line(funding.redeeming_org_id, PARTNER_RECEIVABLE, part))
        lines.append(Line(org_id, PARTNER_PAYABLE, -part))
    payer = funding.fee_payer_org_id
    if fee != 0 and payer != funding.carrier_org_id:
        lines.append(Line(funding.carrier_org_id, FEE_REVENUE, fee))
        lines.append(Line(payer, FEE_PAYABLE, -fee))
    return lines


def redemption_lines(funding: RedemptionFunding) -> list[Line]:
    """The postings of a redemption (empty when it moves nothing between organizations)."""
    return _obligation_lines(funding, funding.parts, funding.fee)


def reversed_parts(parts: Mapping[K, int], reversed_total: int) -> dict[K, int]:
    """How much of each part is reversed once `reversed_total` of their sum has been reversed
    (cumulatively): the first `reversed_total` units of the fixed unit order described in the
    module docstring. Monotone in `reversed_total`, each at most its part, summing exactly."""
    total = sum(parts.values())
    if any(p < 0 for p in parts.values()):
        raise ValueError("parts cannot be negative")
    if not 0 <= reversed_total <= total:
        raise ValueError(f"can reverse between 0 and {total}, not {reversed_total}")
    if reversed_total == total:
        return dict(parts)
    count = len(parts)
    # Every unit at or before time t0 = (2c - n) / 2D precedes the rest, and there are at most
    # c of them (the sum of round(t0 * p) is at most t0 * D + n/2 = c): take them at once ...
    taken: dict[K, int] = {}
    for party, part in parts.items():
        before = max(0, ((2 * reversed_total - count) * part + total) // (2 * total))
        taken[party] = min(part, before)
    # ... then the fewer than n units left, one at a time in order (ties to the earlier party).
    queue = [
        (Fraction(2 * taken[party] + 1, 2 * part), order, party)
        for order, (party, part) in enumerate(parts.items())
        if taken[party] < part
    ]
    heapq.heapify(queue)
    for _ in range(reversed_total - sum(taken.values())):
        _, order, party = heapq.heappop(queue)
        taken[party] += 1
        part = parts[party]
        if taken[party] < part:
            heapq.heappush(queue, (Fraction(2 * taken[party] + 1, 2 * part), order, party))
    return taken


def reversal_slices(
    funding: RedemptionFunding, reversed_before: int, reversed_after: int
) -> dict[uuid.UUID, int]:
    """Each funder's part of the discount reversed between two cumulative reversed totals (in
    split order): the same units the ledger's reversal entries move, so the slices of every
    reversal of a redemption add up to exactly each funder's part."""
    parts = funding.parts
    before, after = reversed_parts(parts, reversed_before), reversed_parts(parts, reversed_after)
    return {org_id: after[org_id] - before[org_id] for org_id in parts}


def reversed_fee(fee: int, discount: int, reversed_total: int) -> int:
    """The part of the fee reversed once `reversed_total` of `discount` has been reversed:
    `round(fee * reversed_total / discount)`, half up; all of it on a full reversal."""
    if discount <= 0:
        return 0
    return (2 * fee * reversed_total + discount) // (2 * discount)


def discount_reversed_by_refund(discount: int, basket: int, refunded_total: int) -> int:
    """The discount reversed once `refunded_total` of a `basket` has been refunded
    (cumulatively): `round(discount * refunded / basket)`, half up, at most the discount."""
    if basket <= 0 or refunded_total < 0:
        raise ValueError("the basket is positive and the refunded amount not negative")
    refunded = min(refunded_total, basket)
    return min(discount, (2 * discount * refunded + basket) // (2 * basket))


def _check_reversal(funding: RedemptionFunding, reversed_total: int) -> None:
    if not 0 <= reversed_total <= funding.discount:
        raise ValueError(
            f"cannot reverse {reversed_total} of a discount of {funding.discount} in total"
        )


def standing_lines(funding: RedemptionFunding, reversed_total: int) -> list[Line]:
    """What a redemption's entries net to once `reversed_total` of its discount is reversed:
    each funder owes `p_f - reversed_f`, the payer owes `F - reversed_fee`."""
    _check_reversal(funding, reversed_total)
    parts = funding.parts
    back = reversed_parts(parts, reversed_total)
    fee = funding.fee
    return _obligation_lines(
        funding,
        {org: part - back[org] for org, part in parts.items()},
        fee - reversed_fee(fee, funding.discount, reversed_total),
    )


def reversal_lines(
    funding: RedemptionFunding, *, reversed_before: int, reversing_now: int
) -> list[Line]:
    """The postings of a reversal of `reversing_now` more of the discount, `reversed_before`
    having been reversed already: the mirror of the redemption's lines for that slice. Empty
    when the slice moves nothing between organizations (e.g. only the redeeming merchant's own
    part). Raises ValueError when the reversals would exceed the discount."""
    if reversing_now <= 0 or reversed_before < 0:
        raise ValueError("a reversal reverses a positive amount after a non-negative one")
    after = reversed_before + reversing_now
    _check_reversal(funding, after)
    parts = funding.parts
    back_before = reversed_parts(parts, reversed_before)
    back_after = reversed_parts(parts, after)
    fee = funding.fee
    slice_fee = reversed_fee(fee, funding.discount, after) - reversed_fee(
        fee, funding.discount, reversed_before
    )
    slice_parts = {org: back_after[org] - back_before[org] for org in parts}
    return [
        Line(line.org_id, line.purpose, -line.amount)
        for line in _obligation_lines(funding, slice_parts, slice_fee)
    ]


def net_by_account(lines: Iterable[Line]) -> dict[tuple[uuid.UUID, Purpose], int]:
    """Lines summed per (organization, purpose), zero sums left out."""
    sums: dict[tuple[uuid.UUID, Purpose], int] = defaultdict(int)
    for line in lines:
        sums[(line.org_id, line.purpose)] += line.amount
    return {key: amount for key, amount in sums.items() if amount != 0}


def check_balanced(lines: Iterable[Line]) -> None:
    """Raise `UnbalancedEntry` unless there are at least two non-zero lines summing to zero."""
    listed = list(lines)
    if any(line.amount == 0 for line in listed):
        raise UnbalancedEntry("a posting cannot be zero")
    if len(listed) < 2:
        raise UnbalancedEntry("an entry has at least two postings")
    total = sum(line.amount for line in listed)
    if total != 0:
        raise UnbalancedEntry(f"the postings sum to {total}, not zero")


# --- statements -------------------------------------------------------------------------------
#
# A statement nets an organization's postings in one currency over one settlement period. The
# rules below are pure: the period a moment falls in (local midnights in the organization's
# time zone, so DST days are 23 or 25 hours long), the payable net, the approval rule and what
# happens to small nets.

SettlementCycle = Literal["daily", "weekly", "monthly"]
StatementStatus = Literal["open", "closed", "approved", "paid", "collected", "carried_forward"]
SETTLEMENT_CYCLES: tuple[SettlementCycle, ...] = ("daily", "weekly", "monthly")
STATEMENT_STATUSES: tuple[StatementStatus, ...] = (
    "open",
    "closed",
    "approved",
    "paid",
    "collected",
    "carried_forward",
)
# Entries without a campaign (adjustments, fees) settle on this cycle.
DEFAULT_CYCLE: SettlementCycle = "monthly"
# What a statement nets: obligations between organizations. Transfers and collections are the
# settlement of statements, not part of them.
STATEMENT_ENTRY_KINDS: tuple[EntryKind, ...] = ("redemption", "reversal", "fee", "adjustment")


@dataclass(frozen=True, slots=True)
class Period:
    """A settlement period `[start, end)` (aware datetimes) and the local days it covers."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date  # inclusive: the local day before `end`

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime) and self.start <= moment < self.end


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The instant a local day begins. Where a DST gap swallows midnight, the first instant of
    the day that exists (zoneinfo resolves the missing wall time with the earlier offset)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def period_first_day(day: date, cycle: SettlementCycle) -> date:
    """The first local day of the period that contains `day`: itself, its ISO week's Monday,
    or the first of its month."""
    if cycle == "daily":
        return day
    if cycle == "weekly":
        return day - timedelta(days=day.weekday())
    if cycle == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown settlement cycle {cycle!r}")


def next_first_day(first_day: date, cycle: SettlementCycle) -> date:
    """The first local day of the period after the one starting on `first_day`."""
    if cycle == "daily":
        return first_day + timedelta(days=1)
    if cycle == "weekly":
        return first_day + timedelta(days=7)
    if cycle == "monthly":
        year, month = divmod(first_day.year * 12 + first_day.month, 12)
        return date(year, month + 1, 1)
    raise ValueError(f"unknown settlement cycle {cycle!r}")


def period_of_day(day: date, cycle: SettlementCycle, timezone: str) -> Period:
    """The period (in `timezone`) that contains the local day `day`."""
    zone = ZoneInfo(timezone)
    first = period_first_day(day, cycle)
    after = next_first_day(first, cycle)
    return Period(
        start=_local_midnight(first, zone),
        end=_local_midnight(after, zone),
        first_day=first,
        last_day=after - timedelta(days=1),
    )


def period_containing(moment: datetime, cycle: SettlementCycle, timezone: str) -> Period:
    """The period (in `timezone`) that contains the instant `moment` (timezone-aware)."""
    if moment.tzinfo is None:
        raise ValueError("the moment must be timezone-aware")
    period = period_of_day(moment.astimezone(ZoneInfo(timezone)).date(), cycle, timezone)
    # A local day whose midnight falls in a DST gap begins after its wall-clock start.
    if moment < period.start:
        return period_of_day(period.first_day - timedelta(days=1), cycle, timezone)
    return period


def is_period_start(day: date, cycle: SettlementCycle) -> bool:
    return period_first_day(day, cycle) == day


@dataclass(frozen=True, slots=True)
class StatementFigures:
    """What a statement (or one of its lines) adds up to, signed from the organization's point
    of view: positive is in its favour (others owe it), negative is what it owes.

    - `shares_receivable` (+): partners' shares of discounts given at its stores;
    - `shares_payable` (-): its shares of discounts given at partners' stores;
    - `fees_payable` (-): platform fees it owes; `fee_revenue` (+): the carrier's fees;
    - `reversals` (+/-): the mirror postings of reversed discounts and fees;
    - `adjustments` (+/-): other entries (fees, corrections);
    - `carried` (+/-): small nets of earlier statements carried into this one.
    """

    shares_receivable: int = 0
    shares_payable: int = 0
    fees_payable: int = 0
    fee_revenue: int = 0
    reversals: int = 0
    adjustments: int = 0
    carried: int = 0

    @property
    def net(self) -> int:
        """The payable net: positive, the platform pays the organization (a transfer);
        negative, the organization owes the platform (a collection)."""
        return (
            self.shares_receivable
            + self.shares_payable
            + self.fees_payable
            + self.fee_revenue
            + self.reversals
            + self.adjustments
            + self.carried
        )

    def __add__(self, other: StatementFigures) -> StatementFigures:
        return StatementFigures(
            shares_receivable=self.shares_receivable + other.shares_receivable,
            shares_payable=self.shares_payable + other.shares_payable,
            fees_payable=self.fees_payable + other.fees_payable,
            fee_revenue=self.fee_revenue + other.fee_revenue,
            reversals=self.reversals + other.reversals,
            adjustments=self.adjustments + other.adjustments,
            carried=self.carried + other.carried,
        )


def figures_of_postings(
    postings: Iterable[tuple[EntryKind, Purpose, int]], carried: int = 0
) -> StatementFigures:
    """An organization's figures from its postings `(entry kind, account purpose, amount)`."""
    sums: dict[str, int] = defaultdict(int)
    for kind, purpose, amount in postings:
        if kind == "redemption":
            sums[purpose] += amount
        elif kind == "reversal":
            sums["reversals"] += amount
        else:
            sums["adjustments"] += amount
    return StatementFigures(
        shares_receivable=sums[PARTNER_RECEIVABLE],
        shares_payable=sums[PARTNER_PAYABLE],
        fees_payable=sums[FEE_PAYABLE],
        fee_revenue=sums[FEE_REVENUE],
        reversals=sums["reversals"],
        adjustments=sums["adjustments"] + sums["payout_clearing"] + sums["cash"],
        carried=carried,
    )


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """Who approves and when two are needed. `second_approver_above`: a net whose absolute
    value is above it needs a second, different approver (None: never). `minimum_payout`: a
    net whose absolute value is below it is carried forward instead of paid or collected."""

    minimum_payout: int = 0
    second_approver_above: int | None = None
    own_finance_may_approve: bool = True

    def approvals_needed(self, net: int) -> int:
        if self.second_approver_above is not None and abs(net) > self.second_approver_above:
            return 2
        return 1

    def carries_forward(self, net: int) -> bool:
        return abs(net) < self.minimum_payout


ApprovalOutcome = Literal["awaiting_second_approver", "approved", "carried_forward"]


class SameApprover(ValueError):
    """The second approval must come from another user."""


def approve_outcome(
    policy: ApprovalPolicy,
    net: int,
    *,
    first_approver: uuid.UUID | None,
    approver: uuid.UUID,
) -> ApprovalOutcome:
    """What an approval by `approver` of a closed statement with `net` does, `first_approver`
    having approved it already (or None). Raises `SameApprover` when the second approval
    would come from the first approver."""
    needed = policy.approvals_needed(net)
    if first_approver is None and needed == 2:
        return "awaiting_second_approver"
    if first_approver is not None and first_approver == approver:
        raise SameApprover("a second, different approver is needed")
    return "carried_forward" if policy.carries_forward(net) else "approved"


def settlement_direction(net: int) -> Literal["transfer", "collection", "none"]:
    """How an approved statement is settled: a transfer to the organization, a collection from
    it, or nothing (a zero net)."""
    if net > 0:
        return "transfer"
    if net < 0:
        return "collection"
    return "none"
