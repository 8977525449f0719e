"""Collections: customers, payment methods (test cards and IBANs), PaymentIntents, charges."""

from __future__ import annotations

import copy
from typing import Any

from coalition.settlement.simulator.calls import (
    Call,
    add_balance_transaction,
)
from coalition.settlement.simulator.forms import StripeError, parameter_error
from coalition.settlement.simulator.store import (
    StripeObject,
    boolean,
    created_filter,
    currency,
    integer,
    metadata,
    only,
    paginate,
    require,
)

# Test payment methods: the shortcuts Stripe's test mode accepts, and test card numbers / IBANs.
TEST_PAYMENT_METHODS = {
    "pm_card_visa": ("card", "4242", "visa", "succeed"),
    "pm_card_mastercard": ("card", "4444", "mastercard", "succeed"),
    "pm_card_chargeDeclined": ("card", "0002", "visa", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": ("card", "9995", "visa", "insufficient_funds"),
    "pm_card_authenticationRequired": ("card", "3155", "visa", "authentication_required"),
}
TEST_CARD_NUMBERS = {
    "4242424242424242": ("visa", "succeed"),
    "5555555555554444": ("mastercard", "succeed"),
    "4000000000000002": ("visa", "generic_decline"),
    "4000000000009995": ("visa", "insufficient_funds"),
    "4000002500003155": ("visa", "authentication_required"),
}
TEST_IBANS = {
    "DE89370400440532013000": "debit_succeed",
    "DE62370400440532013001": "debit_fail",
    "AT611904300234573201": "debit_succeed",
    "AT861904300235473202": "debit_fail",
}
DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "authentication_required": (
        "Your card was declined. This transaction requires authentication."
    ),
}


# ---------------------------------------------------------------------- customers


def create_customer(call: Call) -> StripeObject:
    params = call.params
    only(
        params,
        ("email", "name", "description", "metadata", "payment_method", "invoice_settings", "phone"),
    )
    store = call.store
    customer: StripeObject = {
        "id": store.new_id("cus")[:18],
        "object": "customer",
        "created": store.now(),
        "description": params.get("description"),
        "email": params.get("email"),
        "invoice_settings": {"default_payment_method": None},
        "livemode": False,
        "metadata": metadata(params),
        "name": params.get("name"),
        "phone": params.get("phone"),
    }
    store.add(customer, call.account)
    if params.get("payment_method"):
        _attach(call, str(params["payment_method"]), customer["id"])
    _set_invoice_settings(call, customer)
    call.emit("customer.created", customer)
    return customer


def _set_invoice_settings(call: Call, customer: StripeObject) -> None:
    settings = call.params.get("invoice_settings")
    if not isinstance(settings, dict) or "default_payment_method" not in settings:
        return
    method_id = str(settings["default_payment_method"])
    method = call.store.get(method_id, call.account, "payment_method", "PaymentMethod")
    if method["customer"] != customer["id"]:
        raise StripeError(
            400,
            f"The customer does not have a payment method with the ID {method_id}. The payment "
            "method must be attached to the customer.",
            code="resource_missing",
            param="invoice_settings[default_payment_method]",
        )
    customer["invoice_settings"]["default_payment_method"] = method_id


def retrieve_customer(call: Call, customer_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(customer_id, call.account, "customer")


def update_customer(call: Call, customer_id: str) -> StripeObject:
    only(call.params, ("email", "name", "description", "metadata", "invoice_settings", "phone"))
    customer = call.store.get(customer_id, call.account, "customer")
    previous = copy.deepcopy(customer)
    customer["metadata"] = metadata(call.params, customer["metadata"])
    for name in ("email", "name", "description", "phone"):
        if name in call.params:
            customer[name] = call.params[name] or None
    _set_invoice_settings(call, customer)
    changed = {key: previous[key] for key in customer if previous.get(key) != customer[key]}
    if changed:
        call.emit("customer.updated", customer, previous=changed)
    return customer


def list_customer_payment_methods(call: Call, customer_id: str) -> StripeObject:
    only(call.params, ("type", "limit", "starting_after", "ending_before"))
    call.store.get(customer_id, call.account, "customer")
    items = [
        method
        for method in call.store.of_kind("payment_method", call.account)
        if method["customer"] == customer_id
        and (not call.params.get("type") or method["type"] == call.params["type"])
    ]
    return paginate(call.store, items, call.params, f"/v1/customers/{customer_id}/payment_methods")


# ---------------------------------------------------------------------- payment methods


def _new_payment_method(
    call: Call, method_type: str, details: dict[str, Any], behaviour: str, billing: Any
) -> StripeObject:
    store = call.store
    method: StripeObject = {
        "id": store.new_id("pm"),
        "object": "payment_method",
        "billing_details": {
            "address": None,
            "email": billing.get("email") if isinstance(billing, dict) else None,
            "name": billing.get("name") if isinstance(billing, dict) else None,
            "phone": None,
        },
        "created": store.now(),
        "customer": None,
        "livemode": False,
        "metadata": metadata(call.params),
        "type": method_type,
        method_type: details,
    }
    return store.add(method, call.account, behaviour=behaviour)


def create_payment_method(call: Call) -> StripeObject:
    params = call.params
    only(params, ("type", "card", "sepa_debit", "billing_details", "metadata"))
    method_type = str(require(params, "type"))
    billing = params.get("billing_details") or {}
    if method_type == "card":
        card = params.get("card") or {}
        if not isinstance(card, dict):
            raise parameter_error("Invalid object", "card")
        token = card.get("token")
        if token:
            shortcut = TEST_PAYMENT_METHODS.get("pm_card_" + str(token).removeprefix("tok_"))
            if shortcut is None:
                raise StripeError(
                    400, f"No such token: '{token}'", code="resource_missing", param="card[token]"
                )
            _, last4, brand, behaviour = shortcut
        else:
            number = str(card.get("number") or "").replace(" ", "")
            if number not in TEST_CARD_NUMBERS:
                raise StripeError(
                    402,
                    "Your card number is incorrect.",
                    type="card_error",
                    code="incorrect_number",
                    param="card[number]",
                    stored=False,
                )
            brand, behaviour = TEST_CARD_NUMBERS[number]
            last4 = number[-4:]
        details = {
            "brand": brand,
            "country": "US",
            "exp_month": int(card.get("exp_month") or 12),
            "exp_year": int(card.get("exp_year") or 2034),
            "funding": "credit",
            "last4": last4,
        }
        return _new_payment_method(call, "card", details, behaviour, billing)
    if method_type == "sepa_debit":
        debit = params.get("sepa_debit") or {}
        iban = str(debit.get("iban") if isinstance(debit, dict) else "").replace(" ", "").upper()
        if iban not in TEST_IBANS:
            raise parameter_error(
                "The IBAN you entered is invalid.", "sepa_debit[iban]", "invalid_bank_account_iban"
            )
        details = {"bank_code": iban[4:12], "country": iban[:2], "last4": iban[-4:]}
        return _new_payment_method(call, "sepa_debit", details, TEST_IBANS[iban], billing)
    raise parameter_error(f"Invalid type: {method_type}", "type")


def _resolve_payment_method(call: Call, method_id: str, param: str) -> StripeObject:
    shortcut = TEST_PAYMENT_METHODS.get(method_id)
    if shortcut is not None:
        method_type, last4, brand, behaviour = shortcut
        details = {
            "brand": brand,
            "country": "US",
            "exp_month": 12,
            "exp_year": 2034,
            "funding": "credit",
            "last4": last4,
        }
        return _new_payment_method(call, method_type, details, behaviour, {})
    method = call.store.find(method_id, call.account)
    if method is None or method.get("object") != "payment_method":
        raise StripeError(
            404, f"No such PaymentMethod: '{method_id}'", code="resource_missing", param=param
        )
    return method


def _attach(call: Call, method_id: str, customer_id: str) -> StripeObject:
    method = _resolve_payment_method(call, method_id, "payment_method")
    if method["customer"] not in (None, customer_id):
        raise StripeError(
            400,
            "The payment method you provided has already been attached to a customer.",
            code="payment_method_unexpected_state",
        )
    method["customer"] = customer_id
    call.emit("payment_method.attached", method)
    return method


def attach_payment_method(call: Call, method_id: str) -> StripeObject:
    only(call.params, ("customer",))
    customer_id = str(require(call.params, "customer"))
    call.store.get(customer_id, call.account, "customer")
    return _attach(call, method_id, customer_id)


def detach_payment_method(call: Call, method_id: str) -> StripeObject:
    only(call.params, ())
    method = call.store.get(method_id, call.account, "payment_method", "PaymentMethod")
    if method["customer"] is None:
        raise StripeError(
            400,
            "The payment method you provided is not attached to a customer so detachment is "
            "impossible.",
            code="payment_method_unexpected_state",
        )
    method["customer"] = None
    call.emit("payment_method.detached", method)
    return method


def retrieve_payment_method(call: Call, method_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(method_id, call.account, "payment_method", "PaymentMethod")


def list_payment_methods(call: Call) -> StripeObject:
    only(call.params, ("customer", "type", "limit", "starting_after", "ending_before"))
    items = [
        method
        for method in call.store.of_kind("payment_method", call.account)
        if (not call.params.get("customer") or method["customer"] == call.params["customer"])
        and (not call.params.get("type") or method["type"] == call.params["type"])
    ]
    return paginate(call.store, items, call.params, "/v1/payment_methods")


# ---------------------------------------------------------------------- payment intents


PAYMENT_INTENT_PARAMS = (
    "amount",
    "currency",
    "customer",
    "payment_method",
    "payment_method_types",
    "confirm",
    "off_session",
    "metadata",
    "description",
    "transfer_group",
    "statement_descriptor",
    "receipt_email",
    "setup_future_usage",
    "error_on_requires_action",
    "mandate_data",
    "capture_method",
)


def create_payment_intent(call: Call) -> StripeObject:
    params = call.params
    only(params, PAYMENT_INTENT_PARAMS)
    amount = integer(params, "amount", minimum=1)
    if amount is None:
        require(params, "amount")
    assert amount is not None
    currency_code = currency(params)
    store = call.store
    customer_id = params.get("customer")
    if customer_id:
        store.get(str(customer_id), call.account, "customer")
    method_id: str | None = None
    if params.get("payment_method"):
        method = _resolve_payment_method(call, str(params["payment_method"]), "payment_method")
        if method["customer"] not in (None, customer_id):
            raise StripeError(
                400,
                "The provided PaymentMethod belongs to another customer.",
                param="payment_method",
            )
        method_id = method["id"]
    intent_id = store.new_id("pi")
    intent: StripeObject = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": 0,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{intent_id}_secret_{store.ids.new('s', 24)[2:]}",
        "confirmation_method": "automatic",
        "created": store.now(),
        "currency": currency_code,
        "customer": customer_id,
        "description": params.get("description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": metadata(params),
        "payment_method": method_id,
        "payment_method_types": params.get("payment_method_types") or ["card"],
        "setup_future_usage": params.get("setup_future_usage"),
        "status": "requires_confirmation" if method_id else "requires_payment_method",
        "transfer_group": params.get("transfer_group"),
    }
    store.add(intent, call.account)
    call.emit("payment_intent.created", intent)
    if boolean(params, "confirm"):
        return _confirm(call, intent, off_session=boolean(params, "off_session"))
    return intent


def confirm_payment_intent(call: Call, intent_id: str) -> StripeObject:
    only(call.params, ("payment_method", "off_session", "mandate_data", "error_on_requires_action"))
    intent = call.store.get(intent_id, call.account, "payment_intent", "payment_intent")
    if call.params.get("payment_method"):
        method = _resolve_payment_method(call, str(call.params["payment_method"]), "payment_method")
        intent["payment_method"] = method["id"]
    return _confirm(call, intent, off_session=boolean(call.params, "off_session"))


def _confirm(call: Call, intent: StripeObject, *, off_session: bool) -> StripeObject:
    if intent["status"] not in ("requires_confirmation", "requires_payment_method"):
        raise StripeError(
            400,
            f"This PaymentIntent's status is {intent['status']}, and cannot be confirmed.",
            code="payment_intent_unexpected_state",
            extra={"payment_intent": copy.deepcopy(intent)},
        )
    if intent["payment_method"] is None:
        raise StripeError(
            400,
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            code="payment_intent_unexpected_state",
            param="payment_method",
            extra={"payment_intent": copy.deepcopy(intent)},
        )
    store = call.store
    method = store.get(intent["payment_method"], call.account, "payment_method", "PaymentMethod")
    behaviour = store.hidden.get(method["id"], {}).get("behaviour", "succeed")
    if method["type"] != "card":
        intent["payment_method_types"] = [method["type"]]
    charge = _new_charge(call, intent, method)
    if behaviour in ("succeed", "debit_succeed", "debit_fail"):
        if method["type"] == "sepa_debit":
            # Bank debits settle later: `processing` now, the outcome when the debit clears.
            intent["status"] = "processing"
            charge["status"] = "pending"
            store.hidden.setdefault(intent["id"], {})["debit_outcome"] = behaviour
            call.emit("charge.pending", charge)
            call.emit("payment_intent.processing", intent)
            return intent
        _succeed(call, intent, charge)
        return intent
    if behaviour == "authentication_required" and not off_session:
        intent["status"] = "requires_action"
        intent["next_action"] = {"type": "use_stripe_sdk"}
        store.remove(charge["id"])
        intent["latest_charge"] = None
        call.emit("payment_intent.requires_action", intent)
        return intent
    error = _fail(call, intent, charge, behaviour)
    raise error


def _new_charge(call: Call, intent: StripeObject, method: StripeObject) -> StripeObject:
    store = call.store
    charge: StripeObject = {
        "id": store.new_id("ch" if method["type"] == "card" else "py"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "balance_transaction": None,
        "captured": False,
        "created": store.now(),
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": dict(intent["metadata"]),
        "outcome": None,
        "paid": False,
        "payment_intent": intent["id"],
        "payment_method": method["id"],
        "payment_method_details": {"type": method["type"], method["type"]: method[method["type"]]},
        "refunded": False,
        "status": "pending",
        "transfer_group": intent["transfer_group"],
    }
    store.add(charge, call.account)
    intent["latest_charge"] = charge["id"]
    return charge


def _succeed(call: Call, intent: StripeObject, charge: StripeObject) -> None:
    fee = (
        (intent["amount"] * call.fee_bp + 5000) // 10000 + call.fee_fixed
        if call.fee_bp or call.fee_fixed
        else 0
    )
    txn = add_balance_transaction(
        call,
        call.account,
        amount=intent["amount"],
        currency_code=intent["currency"],
        kind="charge" if charge["id"].startswith("ch_") else "payment",
        source=charge["id"],
        category="charge",
        description=intent["description"],
        fee=min(fee, intent["amount"]),
    )
    charge.update(
        amount_captured=intent["amount"],
        balance_transaction=txn["id"],
        captured=True,
        paid=True,
        status="succeeded",
        outcome={
            "network_status": "approved_by_network",
            "type": "authorized",
            "seller_message": "Payment complete.",
        },
    )
    intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None)
    call.emit("charge.succeeded", charge)
    call.emit("payment_intent.succeeded", intent)


def _fail(call: Call, intent: StripeObject, charge: StripeObject, behaviour: str) -> StripeError:
    method = call.store.objects[intent["payment_method"]]
    if behaviour == "debit_fail":
        code, decline_code, message = (
            "insufficient_funds",
            None,
            "The account has insufficient funds.",
        )
        error_type = "invalid_request_error"
    else:
        code = (
            "authentication_required" if behaviour == "authentication_required" else "card_declined"
        )
        decline_code = behaviour
        message = DECLINE_MESSAGES.get(behaviour, "Your card was declined.")
        error_type = "card_error"
    charge.update(
        status="failed",
        failure_code=code,
        failure_message=message,
        outcome={
            "network_status": "declined_by_network",
            "type": "issuer_declined",
            "reason": decline_code,
        },
    )
    last_error: dict[str, Any] = {
        "type": error_type,
        "code": code,
        "decline_code": decline_code,
        "message": message,
        "charge": charge["id"],
        "payment_method": copy.deepcopy(method),
    }
    intent.update(status="requires_payment_method", last_payment_error=last_error)
    call.emit("charge.failed", charge)
    call.emit("payment_intent.payment_failed", intent)
    return StripeError(
        402,
        message,
        type=error_type,
        code=code,
        extra={
            "decline_code": decline_code,
            "charge": charge["id"],
            "payment_intent": copy.deepcopy(intent),
            "payment_method": copy.deepcopy(method),
        },
    )


def settle_debit(call: Call, intent_id: str, outcome: str | None = None) -> StripeObject:
    """Clear a `processing` bank debit: `succeeded` or `failed` (by default the IBAN's outcome)."""
    store = call.store
    intent = store.get(intent_id, call.account, "payment_intent", "payment_intent")
    if intent["status"] != "processing":
        raise StripeError(400, f"PaymentIntent {intent_id} is {intent['status']}, not processing.")
    planned = store.hidden.get(intent_id, {}).get("debit_outcome", "debit_succeed")
    chosen = outcome or ("succeeded" if planned == "debit_succeed" else "failed")
    charge = store.objects[intent["latest_charge"]]
    if chosen == "succeeded":
        _succeed(call, intent, charge)
    else:
        _fail(call, intent, charge, "debit_fail")
    return intent


def retrieve_payment_intent(call: Call, intent_id: str) -> StripeObject:
    only(call.params, ("client_secret",))
    return call.store.get(intent_id, call.account, "payment_intent", "payment_intent")


def update_payment_intent(call: Call, intent_id: str) -> StripeObject:
    only(call.params, ("metadata", "description", "payment_method"))
    intent = call.store.get(intent_id, call.account, "payment_intent", "payment_intent")
    intent["metadata"] = metadata(call.params, intent["metadata"])
    if "description" in call.params:
        intent["description"] = call.params["description"] or None
    if call.params.get("payment_method"):
        method = _resolve_payment_method(call, str(call.params["payment_method"]), "payment_method")
        intent["payment_method"] = method["id"]
        if intent["status"] == "requires_payment_method":
            intent["status"] = "requires_confirmation"
    return intent


def cancel_payment_intent(call: Call, intent_id: str) -> StripeObject:
    only(call.params, ("cancellation_reason",))
    intent = call.store.get(intent_id, call.account, "payment_intent", "payment_intent")
    if intent["status"] in ("succeeded", "canceled", "processing"):
        raise StripeError(
            400,
            f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}.",
            code="payment_intent_unexpected_state",
        )
    intent.update(
        status="canceled",
        canceled_at=call.store.now(),
        cancellation_reason=call.params.get("cancellation_reason") or "requested_by_customer",
    )
    call.emit("payment_intent.canceled", intent)
    return intent


def list_payment_intents(call: Call) -> StripeObject:
    only(call.params, ("customer", "created", "limit", "starting_after", "ending_before"))
    within = created_filter(call.params)
    items = [
        intent
        for intent in call.store.of_kind("payment_intent", call.account)
        if within(intent["created"])
        and (not call.params.get("customer") or intent["customer"] == call.params["customer"])
    ]
    return paginate(call.store, items, call.params, "/v1/payment_intents")


def retrieve_charge(call: Call, charge_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(charge_id, call.account, "charge")


def list_charges(call: Call) -> StripeObject:
    only(
        call.params,
        (
            "customer",
            "payment_intent",
            "transfer_group",
            "created",
            "limit",
            "starting_after",
            "ending_before",
        ),
    )
    within = created_filter(call.params)
    items = [
        charge
        for charge in call.store.of_kind("charge", call.account)
        if within(charge["created"])
        and all(
            not call.params.get(name) or charge.get(name) == call.params[name]
            for name in ("customer", "payment_intent", "transfer_group")
        )
    ]
    return paginate(call.store, items, call.params, "/v1/charges")
