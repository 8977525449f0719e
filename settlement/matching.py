"""Reconciliation rules: what the ledger says moved through Stripe against what Stripe says.

Pure, like `settlement/domain.py` (split from it by subject): no I/O, no session, no clock.
The service (`settlement/services/reconciliation.py`) reads both sides and persists the
outcome.

Both sides are lists of money movements through the platform's Stripe balance, of three kinds:
a `transfer` to a merchant's connected account (a statement paid), a `collection` from a
merchant (a statement collected: a PaymentIntent), and a `transfer_reversal` (money of a
transfer taken back). Amounts are positive integer minor units; seen from the platform's
balance a transfer is an outflow (`signed` is negative), collections and reversals inflows.
A movement's `status` is `settled` (the money moved) or `pending` (it may yet move: a payout
whose outcome is unknown, a bank debit still processing). What moved no money (a refused
payout, a declined card) is not a movement.

Matching, in passes; each movement on each side is matched at most once:

1. **exact id**: our movement names the Stripe object (`stripe_id`) and Stripe has it;
2. **metadata recovery**: our movement has no Stripe id and a Stripe object's metadata names
   the same statement and attempt (`recovery_key`; the crash case: Stripe moved the money
   and we never heard);
3. **group sums**: what is left of one statement's transfer group (`group`) on each side
   (ours without a Stripe id): one against one is a pair; several whose sums are equal (same
   currency and status, never within a tolerance) match together.

An id we recorded is authoritative: if Stripe lacks that object, ours is missing there,
whatever else Stripe has.

A pair whose currencies differ is a `currency_mismatch`, else whose amounts differ (the Stripe
object's or the balance transaction it moved) an `amount_mismatch`, else whose statuses differ
a `status_mismatch`. A Stripe object recovered for an attempt that is matched already is a
`duplicate` (the same attempt's money moved twice), as is a second record of ours naming one
Stripe object. Whatever is left is `missing_in_stripe` (ours) or `missing_in_ledger`
(Stripe's). Every unmatched or mismatched movement becomes exactly one `Discrepancy`, with a
suggested action.

A run covers a window `[start, end)`: a match or discrepancy belongs to the window holding its
anchor, the Stripe object's `created` (Stripe's clock, the same for every run), or our time
when Stripe has nothing; so each movement is counted by exactly one window's run, whichever
neighbouring movements each run had to read to match it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Literal, get_args

from coalition.settlement.gateway import BalanceTransaction, Collection, Transfer

MovementKind = Literal["transfer", "collection", "transfer_reversal"]
Flow = Literal["settled", "pending"]
Category = Literal[
    "missing_in_stripe",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "status_mismatch",
    "duplicate",
]
CATEGORIES: tuple[Category, ...] = get_args(Category)
Action = Literal[
    "retry_payout",
    "ingest_stripe_events",
    "reverse_duplicate",
    "refund_duplicate",
    "wait_for_stripe",
    "investigate",
]
ACTIONS: tuple[Action, ...] = get_args(Action)
Side = Literal["ledger", "stripe", "both"]
Rule = Literal["id", "metadata", "group"]


def signed(kind: MovementKind, amount: int) -> int:
    """The movement seen from the platform's balance: transfers go out, the rest comes in."""
    return -amount if kind == "transfer" else amount


def recovery_key(kind: MovementKind, statement_id: object, generation: object) -> str:
    """What ties a Stripe object to one attempt of ours when ids do not: the statement and
    the attempt's generation, which every transfer and collection carries in its metadata."""
    return f"{kind}:{statement_id}:{generation}"


def reversal_group(transfer_id: str) -> str:
    """The group of a transfer's reversals (summed against the ledger's)."""
    return f"reversals:{transfer_id}"


def utc_day(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC day holding `moment`, as a window `[start, end)`."""
    if moment.tzinfo is None:
        raise ValueError("the moment must be timezone-aware")
    start = datetime.combine(moment.astimezone(UTC).date(), time(), UTC)
    return start, start + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class LedgerMovement:
    """A movement the ledger records: a payout attempt, or a transfer reversal it recorded.

    `ref` is our id of it; `at` when the ledger recorded it (the posting after the call, or
    the hold while the outcome is unknown)."""

    ref: str
    kind: MovementKind
    amount: int
    currency: str
    status: Flow
    at: datetime
    stripe_id: str | None = None
    recovery_key: str | None = None
    group: str | None = None
    org_id: uuid.UUID | None = None
    statement_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class StripeMovement:
    """A movement Stripe reports: a transfer, a transfer reversal or a PaymentIntent, with
    what its balance transaction moved when that was read (`balance_amount`, positive, and
    `balance_currency`)."""

    id: str
    kind: MovementKind
    amount: int
    currency: str
    status: Flow
    created: datetime
    recovery_key: str | None = None
    group: str | None = None
    balance_amount: int | None = None
    balance_currency: str | None = None
    counterparty: str | None = None  # the connected account paid, or the customer charged
    statement: str | None = None  # the statement its metadata names, as written there


@dataclass(frozen=True, slots=True)
class Match:
    rule: Rule
    ledger: tuple[LedgerMovement, ...]
    stripe: tuple[StripeMovement, ...]


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One unmatched or mismatched movement. `side` says which side's movement(s) it stands
    for; a duplicate also names what it duplicates on the other side (for reading only)."""

    category: Category
    side: Side
    action: Action
    ledger: LedgerMovement | None = None
    stripe: StripeMovement | None = None

    @property
    def key(self) -> str:
        """Stable across runs of one window: the category and both sides' ids."""
        ours = self.ledger.ref if self.ledger else "-"
        theirs = self.stripe.id if self.stripe else "-"
        return f"{self.category}:{ours}:{theirs}"

    @property
    def own(self) -> LedgerMovement | StripeMovement:
        """The movement it stands for (ours, when it stands for both)."""
        moved = self.owned_ledger or self.owned_stripe
        assert moved is not None
        return moved

    @property
    def currency(self) -> str:
        """The currency it is counted in."""
        return self.own.currency

    @property
    def owned_ledger(self) -> LedgerMovement | None:
        return self.ledger if self.side in ("ledger", "both") else None

    @property
    def owned_stripe(self) -> StripeMovement | None:
        return self.stripe if self.side in ("stripe", "both") else None


@dataclass
class Totals:
    """Control totals of one currency: how many movements and their signed sum on each side
    (what the ledger and Stripe say the platform's balance did), how many of each side
    matched, and how many discrepancies."""

    ledger_count: int = 0
    ledger_amount: int = 0
    stripe_count: int = 0
    stripe_amount: int = 0
    matched_ledger: int = 0
    matched_stripe: int = 0
    discrepancies: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    matches: tuple[Match, ...]
    discrepancies: tuple[Discrepancy, ...]
    totals: dict[str, Totals] = field(default_factory=dict)


# --- the passes ---------------------------------------------------------------------------------


def _judge(ledger: LedgerMovement, stripe: StripeMovement) -> Category | None:
    if stripe.currency != ledger.currency or stripe.balance_currency not in (None, ledger.currency):
        return "currency_mismatch"
    if stripe.amount != ledger.amount or stripe.balance_amount not in (None, ledger.amount):
        return "amount_mismatch"
    if stripe.status != ledger.status:
        return "status_mismatch"
    return None


def _action(
    category: Category,
    side: Side,
    ledger: LedgerMovement | None,
    stripe: StripeMovement | None,
) -> Action:
    moved = ledger or stripe
    assert moved is not None
    kind = moved.kind
    if category == "duplicate":
        if side == "stripe":
            return "refund_duplicate" if kind == "collection" else "reverse_duplicate"
        return "investigate"
    if kind == "transfer_reversal":
        return "ingest_stripe_events" if category == "missing_in_ledger" else "investigate"
    ours_pending = ledger is not None and ledger.status == "pending"
    if category in ("missing_in_stripe", "status_mismatch") and ours_pending:
        # The outcome is unknown to us: a retry adopts what Stripe did, or sends it with the
        # same key; a bank debit's outcome comes as an event.
        return "retry_payout" if kind == "transfer" else "ingest_stripe_events"
    if category == "status_mismatch":
        return "wait_for_stripe"
    if category == "missing_in_ledger" and stripe is not None and stripe.recovery_key:
        return "retry_payout"  # the retry adopts the transfer or collection Stripe made
    return "investigate"


def _discrepancy(
    category: Category,
    side: Side,
    ledger: LedgerMovement | None = None,
    stripe: StripeMovement | None = None,
) -> Discrepancy:
    return Discrepancy(category, side, _action(category, side, ledger, stripe), ledger, stripe)


class _Matcher:
    def __init__(self, ledger: Iterable[LedgerMovement], stripe: Iterable[StripeMovement]) -> None:
        self.ledger = sorted(ledger, key=lambda m: (m.at, m.ref))
        unique: dict[str, StripeMovement] = {}
        for movement in stripe:  # the same object read twice (two lists) is one movement
            unique.setdefault(movement.id, movement)
        self.stripe = sorted(unique.values(), key=lambda m: (m.created, m.id))
        self.matches: list[Match] = []
        self.discrepancies: list[Discrepancy] = []
        self.ledger_left: dict[str, LedgerMovement] = {m.ref: m for m in self.ledger}
        self.stripe_left: dict[str, StripeMovement] = {m.id: m for m in self.stripe}
        self.paired_by_key: dict[str, LedgerMovement] = {}

    def pair(self, rule: Rule, ledger: LedgerMovement, stripe: StripeMovement) -> None:
        del self.ledger_left[ledger.ref]
        del self.stripe_left[stripe.id]
        if ledger.recovery_key:
            self.paired_by_key[ledger.recovery_key] = ledger
        category = _judge(ledger, stripe)
        if category is None:
            self.matches.append(Match(rule, (ledger,), (stripe,)))
        else:
            self.discrepancies.append(_discrepancy(category, "both", ledger, stripe))

    def by_id(self) -> None:
        claimed: dict[str, StripeMovement] = {}
        for ledger in self.ledger:
            if ledger.stripe_id is None:
                continue
            stripe = self.stripe_left.get(ledger.stripe_id)
            if stripe is not None and stripe.kind == ledger.kind:
                self.pair("id", ledger, stripe)
                claimed[stripe.id] = stripe
            elif ledger.stripe_id in claimed:  # a second record of one Stripe object
                del self.ledger_left[ledger.ref]
                self.discrepancies.append(
                    _discrepancy("duplicate", "ledger", ledger, claimed[ledger.stripe_id])
                )

    def unrecorded(self) -> list[LedgerMovement]:
        """Our movements left that name no Stripe object: only these are recovered by
        metadata or group."""
        return [m for m in self.ledger_left.values() if m.stripe_id is None]

    def by_metadata(self) -> None:
        waiting = {m.recovery_key: m for m in self.unrecorded() if m.recovery_key is not None}
        for stripe in list(self.stripe_left.values()):
            key = stripe.recovery_key
            if key is None:
                continue
            ledger = waiting.get(key)
            if ledger is not None and ledger.kind == stripe.kind:
                del waiting[key]
                self.pair("metadata", ledger, stripe)
            elif key in self.paired_by_key:  # the attempt's money moved twice
                del self.stripe_left[stripe.id]
                self.discrepancies.append(
                    _discrepancy("duplicate", "stripe", self.paired_by_key[key], stripe)
                )

    def by_group(self) -> None:
        ours: dict[tuple[str, str], list[LedgerMovement]] = defaultdict(list)
        theirs: dict[tuple[str, str], list[StripeMovement]] = defaultdict(list)
        for ledger in self.unrecorded():
            if ledger.group:
                ours[(ledger.kind, ledger.group)].append(ledger)
        for stripe in self.stripe_left.values():
            if stripe.group:
                theirs[(stripe.kind, stripe.group)].append(stripe)
        for key in sorted(ours.keys() & theirs.keys()):
            left, right = ours[key], theirs[key]
            if len(left) == 1 and len(right) == 1:
                self.pair("group", left[0], right[0])
                continue
            both: list[LedgerMovement | StripeMovement] = [*left, *right]
            same = len({m.currency for m in both}) == 1 and len({m.status for m in both}) == 1
            plain = all(_agrees_with_balance(m) for m in right)
            if same and plain and sum(m.amount for m in left) == sum(m.amount for m in right):
                for ledger in left:
                    del self.ledger_left[ledger.ref]
                for stripe in right:
                    del self.stripe_left[stripe.id]
                self.matches.append(Match("group", tuple(left), tuple(right)))

    def leftovers(self) -> None:
        for ledger in self.ledger_left.values():
            self.discrepancies.append(_discrepancy("missing_in_stripe", "ledger", ledger=ledger))
        for stripe in self.stripe_left.values():
            self.discrepancies.append(_discrepancy("missing_in_ledger", "stripe", stripe=stripe))


def _agrees_with_balance(stripe: StripeMovement) -> bool:
    """A Stripe movement whose balance transaction agrees with it (or was not read)."""
    return stripe.balance_amount in (None, stripe.amount) and stripe.balance_currency in (
        None,
        stripe.currency,
    )


def match(ledger: Iterable[LedgerMovement], stripe: Iterable[StripeMovement]) -> Outcome:
    """Match both sides entirely (no window): every movement ends in exactly one match or is
    owned by exactly one discrepancy."""
    matcher = _Matcher(ledger, stripe)
    matcher.by_id()
    matcher.by_metadata()
    matcher.by_group()
    matcher.leftovers()
    return Outcome(tuple(matcher.matches), tuple(matcher.discrepancies))


def _anchor(ledger: Sequence[LedgerMovement], stripe: Sequence[StripeMovement]) -> datetime:
    if stripe:
        return min(m.created for m in stripe)
    return min(m.at for m in ledger)


def reconcile(
    ledger: Iterable[LedgerMovement],
    stripe: Iterable[StripeMovement],
    window: tuple[datetime, datetime] | None = None,
) -> Outcome:
    """Match both sides, keep what is anchored in `window` (all of it without one), and add
    up the control totals per currency."""
    outcome = match(ledger, stripe)
    start, end = window if window is not None else (None, None)

    def inside(ours: Sequence[LedgerMovement], theirs: Sequence[StripeMovement]) -> bool:
        if start is None or end is None:
            return True
        return start <= _anchor(ours, theirs) < end

    matches = tuple(m for m in outcome.matches if inside(m.ledger, m.stripe))
    discrepancies = tuple(
        d
        for d in outcome.discrepancies
        if inside(
            [d.owned_ledger] if d.owned_ledger else [],
            [d.owned_stripe] if d.owned_stripe else [],
        )
    )
    totals: dict[str, Totals] = defaultdict(Totals)
    for found in matches:
        for ours in found.ledger:
            _count_ledger(totals[ours.currency], ours)
            totals[ours.currency].matched_ledger += 1
        for theirs in found.stripe:
            _count_stripe(totals[theirs.currency], theirs)
            totals[theirs.currency].matched_stripe += 1
    for discrepancy in discrepancies:
        if discrepancy.owned_ledger is not None:
            _count_ledger(totals[discrepancy.owned_ledger.currency], discrepancy.owned_ledger)
        if discrepancy.owned_stripe is not None:
            _count_stripe(totals[discrepancy.owned_stripe.currency], discrepancy.owned_stripe)
        totals[discrepancy.currency].discrepancies += 1
    return Outcome(matches, discrepancies, dict(sorted(totals.items())))


def _count_ledger(totals: Totals, movement: LedgerMovement) -> None:
    totals.ledger_count += 1
    totals.ledger_amount += signed(movement.kind, movement.amount)


def _count_stripe(totals: Totals, movement: StripeMovement) -> None:
    totals.stripe_count += 1
    totals.stripe_amount += signed(movement.kind, movement.amount)


# --- Stripe's objects as movements --------------------------------------------------------------

# Balance transaction types that are movements, by the kind of their source. Top-ups, payouts
# to the platform's bank and Stripe's fees are the platform's own business, not the ledger's;
# a charge is read through its PaymentIntent.
BALANCE_KINDS: dict[str, MovementKind] = {
    "transfer": "transfer",
    "transfer_refund": "transfer_reversal",
}
COLLECTION_FLOWS: dict[str, Flow] = {"succeeded": "settled", "processing": "pending"}


def _recovery(kind: MovementKind, metadata: Mapping[str, str]) -> str | None:
    statement, generation = metadata.get("statement_id"), metadata.get("generation")
    return recovery_key(kind, statement, generation) if statement and generation else None


def stripe_movements(
    transfers: Iterable[Transfer],
    collections: Iterable[Collection],
    balance_transactions: Iterable[BalanceTransaction] = (),
) -> list[StripeMovement]:
    """The movements in what Stripe listed: each transfer and the reversals it lists, each
    PaymentIntent that moved or is moving money, each with its balance transaction when that
    was listed too; and a transfer or reversal known only by its balance transaction (its
    object gone, or listed elsewhere) as a movement of its own."""
    balance = {bt.source_id: bt for bt in balance_transactions if bt.source_id}

    def moved(source: str | None) -> tuple[int | None, str | None]:
        bt = balance.get(source) if source else None
        return (abs(bt.amount), bt.currency) if bt is not None else (None, None)

    found: list[StripeMovement] = []
    for transfer in transfers:
        statement = transfer.metadata.get("statement_id")
        found.append(
            StripeMovement(
                transfer.id,
                "transfer",
                transfer.amount,
                transfer.currency,
                "settled",
                transfer.created,
                _recovery("transfer", transfer.metadata),
                transfer.transfer_group,
                *moved(transfer.id),
                counterparty=transfer.destination,
                statement=statement,
            )
        )
        for reversal in transfer.reversals:
            found.append(
                StripeMovement(
                    reversal.id,
                    "transfer_reversal",
                    reversal.amount,
                    reversal.currency,
                    "settled",
                    reversal.created,
                    None,
                    reversal_group(transfer.id),
                    *moved(reversal.id),
                    counterparty=transfer.destination,
                    statement=statement,
                )
            )
    for collection in collections:
        flow = COLLECTION_FLOWS.get(collection.status)
        if flow is None:
            continue  # declined or waiting for the customer: no money moves
        found.append(
            StripeMovement(
                collection.id,
                "collection",
                collection.amount,
                collection.currency,
                flow,
                collection.created,
                _recovery("collection", collection.metadata),
                collection.transfer_group,
                *moved(collection.charge_id),
                counterparty=collection.customer_id,
                statement=collection.metadata.get("statement_id"),
            )
        )
    listed = {m.id for m in found}
    for bt in balance.values():
        kind = BALANCE_KINDS.get(bt.type)
        if kind is None or bt.source_id is None or bt.source_id in listed:
            continue
        amount = abs(bt.amount)
        found.append(
            StripeMovement(
                bt.source_id,
                kind,
                amount,
                bt.currency,
                "settled",
                bt.created,
                balance_amount=amount,
                balance_currency=bt.currency,
            )
        )
    return found
