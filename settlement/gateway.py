"""The settlement gateway: what settlement needs from Stripe, as a typed Protocol with plain
value types and errors. `settlement/stripe_gateway.py` implements it over the `stripe` SDK.

Settlement code depends on `SettlementGateway` and the value types here, never on `stripe`
objects. Amounts are integer minor units; currencies are upper-case ISO 4217 codes on our side
and lower-case on Stripe's (converted here). Every money-moving call takes an idempotency key;
`payout_idempotency_key` and `statement_transfer_group` name a statement's transfer so that a
retry after a crash finds what an earlier attempt did (`find_transfers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

CollectionStatus = Literal["succeeded", "processing", "failed", "requires_action"]
PAGE_SIZE = 100


# ---------------------------------------------------------------------- naming


def statement_transfer_group(statement_id: object) -> str:
    """The `transfer_group` of every transfer (and collection) settling one statement."""
    return f"statement_{statement_id}"


def payout_idempotency_key(statement_id: object, generation: int) -> str:
    """Deterministic per statement and attempt generation: a retry of one attempt reuses it."""
    if generation < 1:
        raise ValueError("attempt generations start at 1")
    return f"coalition:statement:{statement_id}:payout:{generation}"


def collection_idempotency_key(statement_id: object, generation: int) -> str:
    if generation < 1:
        raise ValueError("attempt generations start at 1")
    return f"coalition:statement:{statement_id}:collection:{generation}"


# ---------------------------------------------------------------------- values


@dataclass(frozen=True)
class ConnectedAccount:
    id: str
    charges_enabled: bool
    payouts_enabled: bool
    details_submitted: bool
    transfers_active: bool
    disabled_reason: str | None
    currently_due: tuple[str, ...]
    metadata: Mapping[str, str]

    @property
    def can_receive_transfers(self) -> bool:
        return self.transfers_active and self.details_submitted


@dataclass(frozen=True)
class OnboardingLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class TransferRequest:
    amount: int
    currency: str
    destination: str
    transfer_group: str
    idempotency_key: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class Transfer:
    id: str
    amount: int
    currency: str
    destination: str | None
    transfer_group: str | None
    metadata: Mapping[str, str]
    created: datetime
    amount_reversed: int
    reversed: bool
    balance_transaction_id: str | None
    # The reversals Stripe lists with the transfer (its first page of them: up to ten).
    reversals: tuple[TransferReversal, ...] = ()


@dataclass(frozen=True)
class TransferReversal:
    id: str
    transfer_id: str
    amount: int
    currency: str
    created: datetime
    metadata: Mapping[str, str]
    balance_transaction_id: str | None = None


@dataclass(frozen=True)
class CollectionRequest:
    customer_id: str
    amount: int
    currency: str
    idempotency_key: str
    payment_method_id: str | None = None  # None: the customer's default payment method
    metadata: Mapping[str, str] = field(default_factory=dict)
    transfer_group: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Collection:
    """A PaymentIntent collecting what a merchant owes, confirmed off-session."""

    id: str
    status: CollectionStatus
    amount: int
    amount_received: int
    currency: str
    customer_id: str | None
    payment_method_id: str | None
    charge_id: str | None
    metadata: Mapping[str, str]
    created: datetime
    failure_code: str | None = None
    failure_message: str | None = None
    transfer_group: str | None = None


@dataclass(frozen=True)
class BalanceTransaction:
    id: str
    type: str
    amount: int
    fee: int
    net: int
    currency: str
    source_id: str | None
    created: datetime
    available_on: datetime
    status: str
    reporting_category: str


@dataclass(frozen=True)
class GatewayEvent:
    id: str
    type: str
    created: datetime
    account: str | None  # the connected account it happened on, None for the platform
    object: Mapping[str, Any]  # `data.object`, as plain JSON
    previous_attributes: Mapping[str, Any] | None


# ---------------------------------------------------------------------- errors


class GatewayError(Exception):
    """Stripe could not do what was asked. `retryable` errors may succeed if tried again later
    with the same idempotency key; the others will not."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.http_status = http_status
        self.request_id = request_id


class GatewayUnavailable(GatewayError):
    """No answer, a connection reset, a timeout, a 5xx or rate limit: the outcome is unknown."""

    retryable = True


class GatewayRejected(GatewayError):
    """Stripe refused the request (4xx); trying the same again will fail the same way."""


class GatewayNotFound(GatewayRejected):
    pass


class IdempotencyKeyReused(GatewayRejected):
    """The idempotency key was used before with other parameters."""


class GatewayNotConfigured(GatewayError):
    pass


class WebhookSignatureInvalid(GatewayError):
    """The payload is not signed with our secret, was altered, or its timestamp is too old."""


# ---------------------------------------------------------------------- the protocol


class SettlementGateway(Protocol):
    async def create_connected_account(
        self,
        *,
        email: str | None,
        country: str,
        idempotency_key: str,
        metadata: Mapping[str, str] | None = None,
        account_type: Literal["express", "custom"] = "express",
    ) -> ConnectedAccount: ...

    async def create_onboarding_link(
        self, account_id: str, *, refresh_url: str, return_url: str
    ) -> OnboardingLink: ...

    async def get_connected_account(self, account_id: str) -> ConnectedAccount: ...

    async def create_transfer(self, request: TransferRequest) -> Transfer: ...

    async def get_transfer(self, transfer_id: str) -> Transfer: ...

    async def find_transfers(
        self, *, transfer_group: str, metadata: Mapping[str, str] | None = None
    ) -> list[Transfer]: ...

    async def update_transfer_metadata(
        self, transfer_id: str, metadata: Mapping[str, str]
    ) -> Transfer: ...

    async def reverse_transfer(
        self,
        transfer_id: str,
        *,
        idempotency_key: str,
        amount: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> TransferReversal: ...

    async def create_customer(
        self,
        *,
        idempotency_key: str,
        email: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str: ...

    async def attach_payment_method(
        self, customer_id: str, payment_method_id: str, *, make_default: bool = True
    ) -> str: ...

    async def collect(self, request: CollectionRequest) -> Collection: ...

    async def get_collection(self, collection_id: str) -> Collection: ...

    async def find_collections(
        self, *, customer_id: str, metadata: Mapping[str, str]
    ) -> list[Collection]: ...

    async def list_balance_transactions(
        self,
        *,
        created_from: datetime,
        created_to: datetime,
        transaction_type: str | None = None,
        payout: str | None = None,
        account: str | None = None,
    ) -> list[BalanceTransaction]: ...

    async def list_transfers(
        self,
        *,
        created_from: datetime,
        created_to: datetime,
        destination: str | None = None,
        transfer_group: str | None = None,
    ) -> list[Transfer]: ...

    async def list_collections(
        self, *, created_from: datetime, created_to: datetime
    ) -> list[Collection]: ...

    async def list_events(
        self,
        *,
        after: str | None = None,
        since: datetime | None = None,
        types: Sequence[str] | None = None,
        account: str | None = None,
    ) -> list[GatewayEvent]: ...

    def verify_webhook(self, payload: bytes, signature_header: str | None) -> GatewayEvent: ...
