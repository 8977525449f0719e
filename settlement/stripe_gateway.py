"""`StripeGateway`: the settlement gateway over the real `stripe` SDK (`stripe.StripeClient`,
async calls over httpx), pointed at api.stripe.com or, through its API base, at the simulator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import stripe

from coalition.platform.settings import Settings
from coalition.settlement.gateway import (
    PAGE_SIZE,
    BalanceTransaction,
    Collection,
    CollectionRequest,
    CollectionStatus,
    ConnectedAccount,
    GatewayError,
    GatewayEvent,
    GatewayNotConfigured,
    GatewayNotFound,
    GatewayRejected,
    GatewayUnavailable,
    IdempotencyKeyReused,
    OnboardingLink,
    Transfer,
    TransferRequest,
    TransferReversal,
    WebhookSignatureInvalid,
)


def _timestamp(value: int | None) -> datetime:
    return datetime.fromtimestamp(value or 0, tz=UTC)


def _seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("datetimes passed to the gateway must be timezone-aware")
    return int(moment.timestamp())


def _id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(value["id"])


def _plain(obj: Any) -> dict[str, Any]:
    """A `stripe` object as plain JSON (the SDK's objects are not dicts)."""
    if isinstance(obj, dict):
        return obj
    result: dict[str, Any] = obj.to_dict()
    return result


def _metadata(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def transfer_from_json(obj: Any) -> Transfer:
    """A transfer from Stripe's JSON (an SDK object, or the `data.object` of an event), with
    the reversals listed in it."""
    data = _plain(obj)
    listed = data.get("reversals") or {}
    return Transfer(
        id=data["id"],
        amount=data["amount"],
        currency=data["currency"].upper(),
        destination=_id(data.get("destination")),
        transfer_group=data.get("transfer_group"),
        metadata=_metadata(data.get("metadata")),
        created=_timestamp(data.get("created")),
        amount_reversed=data.get("amount_reversed") or 0,
        reversed=bool(data.get("reversed")),
        balance_transaction_id=_id(data.get("balance_transaction")),
        reversals=tuple(_reversal(item, data["id"]) for item in listed.get("data") or ()),
    )


def _reversal(obj: Any, transfer_id: str) -> TransferReversal:
    data = _plain(obj)
    return TransferReversal(
        id=data["id"],
        transfer_id=_id(data.get("transfer")) or transfer_id,
        amount=data["amount"],
        currency=data["currency"].upper(),
        created=_timestamp(data.get("created")),
        metadata=_metadata(data.get("metadata")),
        balance_transaction_id=_id(data.get("balance_transaction")),
    )


def _account(obj: Any) -> ConnectedAccount:
    data = _plain(obj)
    requirements = data.get("requirements") or {}
    capabilities = data.get("capabilities") or {}
    return ConnectedAccount(
        id=data["id"],
        charges_enabled=bool(data.get("charges_enabled")),
        payouts_enabled=bool(data.get("payouts_enabled")),
        details_submitted=bool(data.get("details_submitted")),
        transfers_active=capabilities.get("transfers") == "active",
        disabled_reason=requirements.get("disabled_reason"),
        currently_due=tuple(requirements.get("currently_due") or ()),
        metadata=_metadata(data.get("metadata")),
    )


_COLLECTION_STATUS: dict[str, CollectionStatus] = {
    "succeeded": "succeeded",
    "processing": "processing",
    "requires_action": "requires_action",
}


def _collection(obj: Any) -> Collection:
    data = _plain(obj)
    error = data.get("last_payment_error") or {}
    return Collection(
        id=data["id"],
        status=_COLLECTION_STATUS.get(data["status"], "failed"),
        amount=data["amount"],
        amount_received=data.get("amount_received") or 0,
        currency=data["currency"].upper(),
        customer_id=_id(data.get("customer")),
        payment_method_id=_id(data.get("payment_method")),
        charge_id=_id(data.get("latest_charge")),
        metadata=_metadata(data.get("metadata")),
        created=_timestamp(data.get("created")),
        failure_code=error.get("code"),
        failure_message=error.get("message"),
        transfer_group=data.get("transfer_group"),
    )


def _balance_transaction(obj: Any) -> BalanceTransaction:
    data = _plain(obj)
    return BalanceTransaction(
        id=data["id"],
        type=data["type"],
        amount=data["amount"],
        fee=data.get("fee") or 0,
        net=data["net"],
        currency=data["currency"].upper(),
        source_id=_id(data.get("source")),
        created=_timestamp(data.get("created")),
        available_on=_timestamp(data.get("available_on")),
        status=data.get("status") or "",
        reporting_category=data.get("reporting_category") or "",
    )


def _event(obj: Any) -> GatewayEvent:
    data = _plain(obj)
    body = data.get("data") or {}
    return GatewayEvent(
        id=data["id"],
        type=data["type"],
        created=_timestamp(data.get("created")),
        account=data.get("account"),
        object=body.get("object") or {},
        previous_attributes=body.get("previous_attributes"),
    )


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    """The `error` object of Stripe's answer ({} when there was no answer)."""
    body = exc.json_body
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _translate(exc: stripe.StripeError) -> GatewayError:
    error = _error_body(exc)
    kwargs: dict[str, Any] = {
        "code": exc.code or error.get("code"),
        "http_status": exc.http_status,
        "request_id": exc.request_id,
    }
    message = exc.user_message or str(exc)
    if isinstance(exc, stripe.IdempotencyError):
        if exc.http_status == 409:
            return GatewayUnavailable(message, **kwargs)
        return IdempotencyKeyReused(message, **kwargs)
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return GatewayUnavailable(message, **kwargs)
    status = exc.http_status or 0
    if status >= 500 or isinstance(exc, stripe.APIError):
        return GatewayUnavailable(message, **kwargs)
    param = getattr(exc, "param", None) or error.get("param")
    if status == 404 or exc.code == "resource_missing":
        return GatewayNotFound(message, param=param, **kwargs)
    return GatewayRejected(message, param=param, **kwargs)


class StripeGateway:
    """`SettlementGateway` over `stripe.StripeClient` (async calls, httpx transport)."""

    def __init__(
        self,
        api_key: str,
        *,
        webhook_secret: str | None = None,
        api_base: str | None = None,
        max_network_retries: int = 2,
        timeout_seconds: float = 30.0,
        webhook_tolerance_seconds: int = 300,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._page_size = page_size
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        base = api_base.rstrip("/") if api_base else None
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base, "connect": base} if base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )
        self._webhook_secret = webhook_secret
        self._tolerance = webhook_tolerance_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        if not settings.stripe_api_key:
            raise GatewayNotConfigured(
                "COALITION_STRIPE_API_KEY is not set (`coalition dev` runs the simulator)"
            )
        return cls(
            settings.stripe_api_key,
            webhook_secret=settings.stripe_webhook_secret,
            api_base=settings.stripe_api_base,
            max_network_retries=settings.stripe_max_network_retries,
            timeout_seconds=settings.stripe_timeout_seconds,
            webhook_tolerance_seconds=settings.stripe_webhook_tolerance_seconds,
        )

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    @property
    def sdk(self) -> stripe.StripeClient:
        """The underlying client, for what the protocol does not cover (tests, tools)."""
        return self._client

    # ------------------------------------------------------------------ Connect

    async def create_connected_account(
        self,
        *,
        email: str | None,
        country: str,
        idempotency_key: str,
        metadata: Mapping[str, str] | None = None,
        account_type: Literal["express", "custom"] = "express",
    ) -> ConnectedAccount:
        params: dict[str, Any] = {
            "type": account_type,
            "country": country,
            "capabilities": {"transfers": {"requested": True}},
            "metadata": dict(metadata or {}),
        }
        if email:
            params["email"] = email
        try:
            account = await self._client.v1.accounts.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _account(account)

    async def create_onboarding_link(
        self, account_id: str, *, refresh_url: str, return_url: str
    ) -> OnboardingLink:
        try:
            link = await self._client.v1.account_links.create_async(
                {
                    "account": account_id,
                    "type": "account_onboarding",
                    "refresh_url": refresh_url,
                    "return_url": return_url,
                }
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return OnboardingLink(url=link.url, expires_at=_timestamp(link.expires_at))

    async def get_connected_account(self, account_id: str) -> ConnectedAccount:
        try:
            account = await self._client.v1.accounts.retrieve_async(account_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _account(account)

    # ------------------------------------------------------------------ transfers

    async def create_transfer(self, request: TransferRequest) -> Transfer:
        if request.amount <= 0:
            raise ValueError("a transfer moves a positive amount")
        params: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "destination": request.destination,
            "transfer_group": request.transfer_group,
            "metadata": dict(request.metadata),
        }
        if request.description:
            params["description"] = request.description
        try:
            transfer = await self._client.v1.transfers.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return transfer_from_json(transfer)

    async def get_transfer(self, transfer_id: str) -> Transfer:
        try:
            transfer = await self._client.v1.transfers.retrieve_async(transfer_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return transfer_from_json(transfer)

    async def find_transfers(
        self, *, transfer_group: str, metadata: Mapping[str, str] | None = None
    ) -> list[Transfer]:
        """Every transfer of the group (all pages) whose metadata includes `metadata`."""
        wanted = dict(metadata or {})
        found = await self._all(
            self._client.v1.transfers.list_async,
            {"transfer_group": transfer_group, "limit": self._page_size},
        )
        transfers = [transfer_from_json(item) for item in found]
        return [t for t in transfers if all(t.metadata.get(k) == v for k, v in wanted.items())]

    async def update_transfer_metadata(
        self, transfer_id: str, metadata: Mapping[str, str]
    ) -> Transfer:
        try:
            transfer = await self._client.v1.transfers.update_async(
                transfer_id,
                {"metadata": dict(metadata)},  # type: ignore[typeddict-item]
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return transfer_from_json(transfer)

    async def reverse_transfer(
        self,
        transfer_id: str,
        *,
        idempotency_key: str,
        amount: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> TransferReversal:
        params: dict[str, Any] = {"metadata": dict(metadata or {})}
        if amount is not None:
            params["amount"] = amount
        try:
            reversal = await self._client.v1.transfers.reversals.create_async(
                transfer_id,
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _reversal(reversal, transfer_id)

    # ------------------------------------------------------------------ collections

    async def create_customer(
        self,
        *,
        idempotency_key: str,
        email: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        params: dict[str, Any] = {"metadata": dict(metadata or {})}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        try:
            customer = await self._client.v1.customers.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return str(customer.id)

    async def attach_payment_method(
        self, customer_id: str, payment_method_id: str, *, make_default: bool = True
    ) -> str:
        try:
            method = await self._client.v1.payment_methods.attach_async(
                payment_method_id, {"customer": customer_id}
            )
            if make_default:
                await self._client.v1.customers.update_async(
                    customer_id, {"invoice_settings": {"default_payment_method": method.id}}
                )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return str(method.id)

    async def collect(self, request: CollectionRequest) -> Collection:
        """Charge the merchant's saved payment method off-session.

        A decline is an answer, not an error: it comes back as a `failed` collection (and a
        replay of the same idempotency key answers the same). Bank debits come back
        `processing` and settle later (`payment_intent.succeeded` / `.payment_failed`).
        """
        if request.amount <= 0:
            raise ValueError("a collection takes a positive amount")
        try:
            method = request.payment_method_id or await self._default_payment_method(
                request.customer_id
            )
            params: dict[str, Any] = {
                "amount": request.amount,
                "currency": request.currency.lower(),
                "customer": request.customer_id,
                "payment_method": method,
                "confirm": True,
                "off_session": True,
                "metadata": dict(request.metadata),
            }
            if request.transfer_group:
                params["transfer_group"] = request.transfer_group
            if request.description:
                params["description"] = request.description
            intent = await self._client.v1.payment_intents.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": request.idempotency_key},
            )
        except stripe.CardError as exc:
            declined = _error_body(exc).get("payment_intent")
            if not declined:
                raise _translate(exc) from exc
            return _collection(declined)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _collection(intent)

    async def _default_payment_method(self, customer_id: str) -> str:
        customer = await self._client.v1.customers.retrieve_async(customer_id)
        settings = _plain(customer).get("invoice_settings") or {}
        method = _id(settings.get("default_payment_method"))
        if method is None:
            raise GatewayRejected(
                f"customer {customer_id} has no default payment method",
                code="no_default_payment_method",
                param="payment_method",
            )
        return method

    async def get_collection(self, collection_id: str) -> Collection:
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(collection_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _collection(intent)

    async def find_collections(
        self, *, customer_id: str, metadata: Mapping[str, str]
    ) -> list[Collection]:
        found = await self._all(
            self._client.v1.payment_intents.list_async,
            {"customer": customer_id, "limit": self._page_size},
        )
        collections = [_collection(item) for item in found]
        return [c for c in collections if all(c.metadata.get(k) == v for k, v in metadata.items())]

    # ------------------------------------------------------------------ reporting

    async def list_balance_transactions(
        self,
        *,
        created_from: datetime,
        created_to: datetime,
        transaction_type: str | None = None,
        payout: str | None = None,
        account: str | None = None,
    ) -> list[BalanceTransaction]:
        """Every balance transaction created in `[created_from, created_to)`, all pages."""
        params: dict[str, Any] = {
            "created": {"gte": _seconds(created_from), "lt": _seconds(created_to)},
            "limit": self._page_size,
        }
        if transaction_type:
            params["type"] = transaction_type
        if payout:
            params["payout"] = payout
        found = await self._all(
            self._client.v1.balance_transactions.list_async, params, account=account
        )
        return [_balance_transaction(item) for item in found]

    async def list_transfers(
        self,
        *,
        created_from: datetime,
        created_to: datetime,
        destination: str | None = None,
        transfer_group: str | None = None,
    ) -> list[Transfer]:
        """Every transfer created in `[created_from, created_to)`, all pages."""
        params: dict[str, Any] = {
            "created": {"gte": _seconds(created_from), "lt": _seconds(created_to)},
            "limit": self._page_size,
        }
        if destination:
            params["destination"] = destination
        if transfer_group:
            params["transfer_group"] = transfer_group
        found = await self._all(self._client.v1.transfers.list_async, params)
        return [transfer_from_json(item) for item in found]

    async def list_collections(
        self, *, created_from: datetime, created_to: datetime
    ) -> list[Collection]:
        """Every PaymentIntent created in `[created_from, created_to)`, all pages."""
        found = await self._all(
            self._client.v1.payment_intents.list_async,
            {
                "created": {"gte": _seconds(created_from), "lt": _seconds(created_to)},
                "limit": self._page_size,
            },
        )
        return [_collection(item) for item in found]

    async def list_events(
        self,
        *,
        after: str | None = None,
        since: datetime | None = None,
        types: Sequence[str] | None = None,
        account: str | None = None,
    ) -> list[GatewayEvent]:
        """Events newer than the event `after` (or created at or after `since`), oldest first.

        With `after`, pages walk toward newer events (`ending_before`); the last event returned
        is the next cursor.
        """
        params: dict[str, Any] = {"limit": self._page_size}
        if types:
            params["types"] = list(types)
        if after is not None:
            params["ending_before"] = after
        elif since is not None:
            params["created"] = {"gte": _seconds(since)}
        found = await self._all(self._client.v1.events.list_async, params, account=account)
        events = [_event(item) for item in found]
        if after is None:
            events.reverse()  # newest first from Stripe; oldest first for the caller
        return events

    async def _all(
        self, list_call: Any, params: dict[str, Any], *, account: str | None = None
    ) -> list[Any]:
        options: dict[str, Any] = {"stripe_account": account} if account else {}
        try:
            page = await list_call(params, options)
            return [item async for item in page.auto_paging_iter()]
        except stripe.StripeError as exc:
            raise _translate(exc) from exc

    # ------------------------------------------------------------------ webhooks

    def verify_webhook(self, payload: bytes, signature_header: str | None) -> GatewayEvent:
        """The event in a webhook request, from its raw body and `Stripe-Signature` header."""
        if not self._webhook_secret:
            raise GatewayNotConfigured("COALITION_STRIPE_WEBHOOK_SECRET is not set")
        if not signature_header:
            raise WebhookSignatureInvalid("no Stripe-Signature header", code="invalid_signature")
        try:
            event = stripe.Webhook.construct_event(
                payload, signature_header, self._webhook_secret, tolerance=self._tolerance
            )
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureInvalid(str(exc), code="invalid_signature") from exc
        except (ValueError, IndexError) as exc:
            raise WebhookSignatureInvalid(
                f"malformed webhook: {exc}", code="invalid_signature"
            ) from exc
        return _event(event)
