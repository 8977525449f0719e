"""Reconciliation rules (settlement/matching.py), property-based: a clean set reconciles to
nothing, one injected fault of a category is exactly one discrepancy of that category, every
movement is accounted for exactly once, the control totals add up, and windows partition."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coalition.settlement.gateway import (
    BalanceTransaction,
    Collection,
    CollectionStatus,
    Transfer,
    TransferReversal,
)
from coalition.settlement.matching import (
    CATEGORIES,
    LedgerMovement,
    MovementKind,
    Outcome,
    StripeMovement,
    match,
    reconcile,
    recovery_key,
    signed,
    stripe_movements,
)

T0 = datetime(2026, 11, 16, tzinfo=UTC)
KINDS: tuple[MovementKind, ...] = ("transfer", "collection", "transfer_reversal")
LINKS = ("id", "id_and_metadata", "metadata", "group")


@dataclass(frozen=True)
class Twin:
    """One movement as both sides see it, and how they are tied together."""

    ledger: LedgerMovement
    stripe: StripeMovement
    link: str


@st.composite
def twins(draw: st.DrawFn, index: int) -> Twin:
    kind = draw(st.sampled_from(KINDS))
    amount = draw(st.integers(1, 10_000_000))
    currency = draw(st.sampled_from(["CNY", "USD"]))
    status = draw(st.sampled_from(["settled", "pending"]))
    link = draw(st.sampled_from(LINKS))
    at = T0 + timedelta(seconds=draw(st.integers(0, 86_399)))
    created = at + timedelta(seconds=draw(st.integers(-5, 5)))
    stripe_id = f"obj_{index}"
    key = recovery_key(kind, f"statement-{index}", 1)
    group = f"statement_{index}"
    ledger = LedgerMovement(
        ref=f"ours-{index}",
        kind=kind,
        amount=amount,
        currency=currency,
        status=status,
        at=at,
        stripe_id=stripe_id if link.startswith("id") else None,
        recovery_key=key,
        group=group,
        org_id=uuid.UUID(int=index + 1),
    )
    stripe = StripeMovement(
        id=stripe_id,
        kind=kind,
        amount=amount,
        currency=currency,
        status=status,
        created=created,
        recovery_key=key if link in ("id_and_metadata", "metadata") else None,
        group=group,
        balance_amount=draw(st.sampled_from([None, amount])),
        balance_currency=currency,
    )
    return Twin(ledger, stripe, link)


@st.composite
def clean_sets(draw: st.DrawFn) -> list[Twin]:
    size = draw(st.integers(1, 25))
    return [draw(twins(index)) for index in range(size)]


def sides(world: list[Twin]) -> tuple[list[LedgerMovement], list[StripeMovement]]:
    return [t.ledger for t in world], [t.stripe for t in world]


def check_accounting(
    outcome: Outcome, ledger: list[LedgerMovement], stripe: list[StripeMovement]
) -> None:
    """Every movement is in exactly one match or owned by exactly one discrepancy, and the
    totals are the sums of what was accounted for."""
    unique: dict[str, StripeMovement] = {}
    for movement in stripe:
        unique.setdefault(movement.id, movement)
    seen_ledger = Counter(m.ref for found in outcome.matches for m in found.ledger)
    seen_ledger.update(d.owned_ledger.ref for d in outcome.discrepancies if d.owned_ledger)
    seen_stripe = Counter(m.id for found in outcome.matches for m in found.stripe)
    seen_stripe.update(d.owned_stripe.id for d in outcome.discrepancies if d.owned_stripe)
    assert seen_ledger == Counter(m.ref for m in ledger)
    assert seen_stripe == Counter(list(unique))

    expected: dict[str, list[int]] = defaultdict(lambda: [0] * 7)
    for m in ledger:
        expected[m.currency][0] += 1
        expected[m.currency][1] += signed(m.kind, m.amount)
    for s in unique.values():
        expected[s.currency][2] += 1
        expected[s.currency][3] += signed(s.kind, s.amount)
    for found in outcome.matches:
        for m in found.ledger:
            expected[m.currency][4] += 1
        for s in found.stripe:
            expected[s.currency][5] += 1
    for d in outcome.discrepancies:
        expected[d.currency][6] += 1
    got = {
        currency: [
            t.ledger_count,
            t.ledger_amount,
            t.stripe_count,
            t.stripe_amount,
            t.matched_ledger,
            t.matched_stripe,
            t.discrepancies,
        ]
        for currency, t in outcome.totals.items()
    }
    assert got == dict(expected)
    # What the two sides disagree on is exactly what the discrepancies hold.
    gap: dict[str, int] = defaultdict(int)
    for d in outcome.discrepancies:
        if d.owned_ledger:
            gap[d.owned_ledger.currency] += signed(d.owned_ledger.kind, d.owned_ledger.amount)
        if d.owned_stripe:
            gap[d.owned_stripe.currency] -= signed(d.owned_stripe.kind, d.owned_stripe.amount)
    for currency, t in outcome.totals.items():
        assert t.ledger_amount - t.stripe_amount == gap[currency]


@settings(max_examples=150)
@given(clean_sets())
def test_a_clean_set_reconciles_to_no_discrepancy(world: list[Twin]) -> None:
    ledger, stripe = sides(world)
    outcome = reconcile(ledger, stripe)
    assert outcome.discrepancies == ()
    assert sum(len(m.ledger) for m in outcome.matches) == len(world)
    for currency, totals in outcome.totals.items():
        assert totals.ledger_amount == totals.stripe_amount, currency
        assert totals.ledger_count == totals.stripe_count == totals.matched_ledger
    rules = {m.ledger[0].ref: m.rule for m in outcome.matches}
    for twin in world:  # each pair was found by the pass its link allows
        expected = {"id": "id", "id_and_metadata": "id", "metadata": "metadata", "group": "group"}
        assert rules[twin.ledger.ref] == expected[twin.link]
    check_accounting(outcome, ledger, stripe)


def inject(
    world: list[Twin], target: int, category: str, data: st.DataObject
) -> tuple[list[LedgerMovement], list[StripeMovement]]:
    ledger, stripe = sides(world)
    twin = world[target]
    if category == "missing_in_stripe":
        stripe.remove(twin.stripe)
    elif category == "missing_in_ledger":
        ledger.remove(twin.ledger)
    elif category == "amount_mismatch":
        delta = data.draw(st.integers(-twin.stripe.amount + 1, 1_000).filter(bool))
        if data.draw(st.booleans()) and twin.stripe.balance_amount is not None:
            altered = replace(twin.stripe, balance_amount=twin.stripe.amount + delta)
        else:
            altered = replace(twin.stripe, amount=twin.stripe.amount + delta)
        stripe[target] = altered
    elif category == "currency_mismatch":
        other = "USD" if twin.stripe.currency == "CNY" else "CNY"
        stripe[target] = replace(twin.stripe, currency=other, balance_currency=other)
    elif category == "status_mismatch":
        flipped = "pending" if twin.ledger.status == "settled" else "settled"
        ledger[target] = replace(twin.ledger, status=flipped)
    elif category == "duplicate":
        copy = replace(
            twin.stripe,
            id=f"{twin.stripe.id}_again",
            recovery_key=twin.ledger.recovery_key,
            created=twin.stripe.created + timedelta(seconds=data.draw(st.integers(-3, 3))),
        )
        stripe.append(copy)
    return ledger, stripe


@settings(max_examples=300)
@given(clean_sets(), st.sampled_from(CATEGORIES), st.data())
def test_one_injected_fault_is_exactly_one_discrepancy_of_its_category(
    world: list[Twin], category: str, data: st.DataObject
) -> None:
    target = data.draw(st.integers(0, len(world) - 1))
    # A copy tied to the attempt by metadata, of a transfer Stripe holds without it, would be
    # the one recovered: the original is then what the ledger lacks. Duplicates are told by
    # the attempt's metadata or by our recorded id.
    assume(category != "duplicate" or world[target].link != "group")
    ledger, stripe = inject(world, target, category, data)
    outcome = reconcile(ledger, stripe)
    [found] = outcome.discrepancies
    assert found.category == category
    named = {found.ledger.ref if found.ledger else None, found.stripe.id if found.stripe else None}
    assert named & {world[target].ledger.ref, world[target].stripe.id}  # it names the victim
    assert found.ledger is not None or found.stripe is not None
    if category in ("amount_mismatch", "currency_mismatch", "status_mismatch"):
        assert found.side == "both" and found.ledger and found.stripe
    check_accounting(outcome, ledger, stripe)


movements_ids = st.sampled_from([f"obj_{n}" for n in range(6)])
keys = st.sampled_from([None, *(recovery_key("transfer", f"s{n}", 1) for n in range(4))])
groups = st.sampled_from([None, "statement_a", "statement_b"])
times = st.integers(0, 3 * 86_400).map(lambda s: T0 + timedelta(seconds=s))


@st.composite
def any_ledger(draw: st.DrawFn, index: int) -> LedgerMovement:
    return LedgerMovement(
        ref=f"ours-{index}",
        kind=draw(st.sampled_from(KINDS)),
        amount=draw(st.integers(1, 5_000)),
        currency=draw(st.sampled_from(["CNY", "USD"])),
        status=draw(st.sampled_from(["settled", "pending"])),
        at=draw(times),
        stripe_id=draw(st.none() | movements_ids),
        recovery_key=draw(keys),
        group=draw(groups),
    )


@st.composite
def any_stripe(draw: st.DrawFn) -> StripeMovement:
    amount = draw(st.integers(1, 5_000))
    return StripeMovement(
        id=draw(movements_ids),
        kind=draw(st.sampled_from(KINDS)),
        amount=amount,
        currency=draw(st.sampled_from(["CNY", "USD"])),
        status=draw(st.sampled_from(["settled", "pending"])),
        created=draw(times),
        recovery_key=draw(keys),
        group=draw(groups),
        balance_amount=draw(st.sampled_from([None, amount, amount + 1])),
    )


@st.composite
def any_sides(draw: st.DrawFn) -> tuple[list[LedgerMovement], list[StripeMovement]]:
    ledger = [draw(any_ledger(n)) for n in range(draw(st.integers(0, 12)))]
    stripe = draw(st.lists(any_stripe(), max_size=12))
    return ledger, stripe


@settings(max_examples=200)
@given(any_sides())
def test_whatever_the_input_each_movement_is_accounted_once_and_totals_add_up(
    both: tuple[list[LedgerMovement], list[StripeMovement]],
) -> None:
    ledger, stripe = both
    outcome = reconcile(ledger, stripe)
    check_accounting(outcome, ledger, stripe)
    for found in outcome.matches:  # never a tolerance: what matched is equal to the unit
        assert sum(m.amount for m in found.ledger) == sum(s.amount for s in found.stripe)
        assert len({m.currency for m in (*found.ledger, *found.stripe)}) == 1
    assert len({d.key for d in outcome.discrepancies}) == len(outcome.discrepancies)


@settings(max_examples=150)
@given(any_sides(), st.integers(1, 6))
def test_windows_that_partition_time_share_out_every_match_and_discrepancy(
    both: tuple[list[LedgerMovement], list[StripeMovement]], cuts: int
) -> None:
    ledger, stripe = both
    whole = reconcile(ledger, stripe)
    bounds = [T0 + timedelta(days=3 * n / cuts) for n in range(cuts)]
    bounds = [T0 - timedelta(days=1), *bounds[1:], T0 + timedelta(days=4)]
    parts = [reconcile(ledger, stripe, window) for window in itertools.pairwise(bounds)]
    assert sorted(d.key for p in parts for d in p.discrepancies) == sorted(
        d.key for d in whole.discrepancies
    )
    assert sum(len(p.matches) for p in parts) == len(whole.matches)
    for currency, totals in whole.totals.items():
        assert totals.ledger_amount == sum(
            p.totals[currency].ledger_amount for p in parts if currency in p.totals
        )


def test_group_sums_match_a_statement_paid_in_parts_and_never_within_a_tolerance() -> None:
    ours = LedgerMovement("ours", "transfer", 1_000, "CNY", "settled", T0, group="statement_7")
    parts = [
        StripeMovement(f"tr_{n}", "transfer", amount, "CNY", "settled", T0, group="statement_7")
        for n, amount in enumerate((600, 300, 100))
    ]
    [found] = match([ours], parts).matches
    assert (found.rule, len(found.stripe)) == ("group", 3)

    short = [*parts[:2], replace(parts[2], amount=99)]
    outcome = reconcile([ours], short)
    assert outcome.matches == ()
    assert Counter(d.category for d in outcome.discrepancies) == {
        "missing_in_stripe": 1,
        "missing_in_ledger": 3,
    }


def test_a_recorded_id_is_authoritative_over_metadata() -> None:
    key = recovery_key("transfer", "s1", 1)
    ours = LedgerMovement("ours", "transfer", 500, "CNY", "settled", T0, "tr_gone", key)
    other = StripeMovement("tr_other", "transfer", 500, "CNY", "settled", T0, key)
    outcome = match([ours], [other])
    assert sorted(d.category for d in outcome.discrepancies) == [
        "missing_in_ledger",
        "missing_in_stripe",
    ]


def test_suggested_actions() -> None:
    key = recovery_key("transfer", "s1", 1)
    in_flight = LedgerMovement("ours", "transfer", 500, "CNY", "pending", T0, None, key)
    made = StripeMovement("tr_1", "transfer", 500, "CNY", "settled", T0, key)
    [unknown] = match([in_flight], [made]).discrepancies
    assert (unknown.category, unknown.action) == ("status_mismatch", "retry_payout")
    [never_sent] = match([in_flight], []).discrepancies
    assert (never_sent.category, never_sent.action) == ("missing_in_stripe", "retry_payout")
    paid = replace(in_flight, status="settled", stripe_id="tr_1")
    again = replace(made, id="tr_2")
    [twice] = match([paid], [made, again]).discrepancies
    assert (twice.category, twice.side, twice.action) == (
        "duplicate",
        "stripe",
        "reverse_duplicate",
    )
    assert twice.ledger == paid and twice.stripe == again
    reversal = StripeMovement("trr_1", "transfer_reversal", 100, "CNY", "settled", T0)
    [unheard] = match([], [reversal]).discrepancies
    assert (unheard.category, unheard.action) == ("missing_in_ledger", "ingest_stripe_events")
    stranger = StripeMovement("tr_x", "transfer", 100, "CNY", "settled", T0)
    [unknown_transfer] = match([], [stranger]).discrepancies
    assert unknown_transfer.action == "investigate"


def test_stripe_objects_become_movements_with_what_their_balance_transactions_moved() -> None:
    def bt(source: str, kind: str, amount: int, currency: str = "CNY") -> BalanceTransaction:
        return BalanceTransaction(
            id=f"txn_{source}",
            type=kind,
            amount=amount,
            fee=0,
            net=amount,
            currency=currency,
            source_id=source,
            created=T0,
            available_on=T0,
            status="available",
            reporting_category=kind,
        )

    reversal = TransferReversal("trr_1", "tr_1", 300, "CNY", T0, {})
    transfer = Transfer(
        id="tr_1",
        amount=1_000,
        currency="CNY",
        destination="acct_cafe",
        transfer_group="statement_s1",
        metadata={"statement_id": "s1", "generation": "2"},
        created=T0,
        amount_reversed=300,
        reversed=False,
        balance_transaction_id="txn_tr_1",
        reversals=(reversal,),
    )

    def intent(intent_id: str, status: CollectionStatus) -> Collection:
        return Collection(
            id=intent_id,
            status=status,
            amount=500,
            amount_received=500 if status == "succeeded" else 0,
            currency="CNY",
            customer_id="cus_bank",
            payment_method_id="pm_1",
            charge_id=f"ch_{intent_id}",
            metadata={"statement_id": "s2", "generation": "1"},
            created=T0,
        )

    found = stripe_movements(
        [transfer],
        [intent("pi_ok", "succeeded"), intent("pi_debit", "processing"), intent("pi_no", "failed")],
        [
            bt("tr_1", "transfer", -999),  # the transfer says 1000, its money says 999
            bt("trr_1", "transfer_refund", 300),
            bt("ch_pi_ok", "charge", 500),
            bt("tr_gone", "transfer", -70),  # a transfer known only by its money
            bt("tu_1", "topup", 1_000_000),  # the platform's own business
        ],
    )
    assert [
        (m.id, m.kind, m.amount, m.status, m.balance_amount, m.recovery_key, m.group) for m in found
    ] == [
        ("tr_1", "transfer", 1_000, "settled", 999, "transfer:s1:2", "statement_s1"),
        ("trr_1", "transfer_reversal", 300, "settled", 300, None, "reversals:tr_1"),
        ("pi_ok", "collection", 500, "settled", 500, "collection:s2:1", None),
        ("pi_debit", "collection", 500, "pending", None, "collection:s2:1", None),
        ("tr_gone", "transfer", 70, "settled", 70, None, None),
    ]
    assert {m.counterparty for m in found[:4]} == {"acct_cafe", "cus_bank"}
    assert (found[0].statement, found[2].statement) == ("s1", "s2")
