"""What every `/v1` handler gets (`Call`) and the balance bookkeeping they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coalition.settlement.simulator.forms import Params, StripeError
from coalition.settlement.simulator.store import (
    Store,
    StripeObject,
)


@dataclass
class Call:
    """One API request as a handler sees it."""

    store: Store
    account: str  # the acting account: the platform, or the Stripe-Account header
    params: Params
    request_id: str
    idempotency_key: str | None
    base_url: str
    fee_bp: int = 0
    fee_fixed: int = 0

    @property
    def on_platform(self) -> bool:
        return self.account == self.store.platform_id

    def emit(
        self, event_type: str, obj: StripeObject, account: str | None = None, **kwargs: Any
    ) -> None:
        self.store.emit(
            event_type,
            obj,
            account or self.account,
            request=(self.request_id, self.idempotency_key),
            **kwargs,
        )


Handler = Callable[..., StripeObject]


def platform_only(call: Call, what: str) -> None:
    if not call.on_platform:
        raise StripeError(
            400, f"{what} can only be made by the platform, not on behalf of a connected account."
        )


# ---------------------------------------------------------------------- balance transactions


def add_balance_transaction(
    call: Call,
    account: str,
    *,
    amount: int,
    currency_code: str,
    kind: str,
    source: str,
    category: str,
    description: str | None = None,
    fee: int = 0,
) -> StripeObject:
    store = call.store
    now = store.now()
    transaction: StripeObject = {
        "id": store.new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "balance_type": "payments",
        "created": now,
        "currency": currency_code,
        "description": description,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": (
            [
                {
                    "amount": fee,
                    "application": None,
                    "currency": currency_code,
                    "description": "Stripe processing fees",
                    "type": "stripe_fee",
                }
            ]
            if fee
            else []
        ),
        "net": amount - fee,
        "reporting_category": category,
        "source": source,
        "status": "available",
        "type": kind,
    }
    return store.add(transaction, account)


def available(store: Store, account: str, currency_code: str) -> int:
    return sum(
        txn["net"]
        for txn in store.of_kind("balance_transaction", account)
        if txn["currency"] == currency_code and txn["status"] == "available"
    )


def insufficient_funds(message: str) -> StripeError:
    return StripeError(400, message, code="balance_insufficient")
