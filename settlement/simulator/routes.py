"""The `/v1` routing table: method and path to handler."""

from __future__ import annotations

import re
from typing import cast

from coalition.settlement.simulator import connect, events, payments
from coalition.settlement.simulator.calls import Handler
from coalition.settlement.simulator.forms import StripeError

_ID = r"([A-Za-z0-9_]+)"

ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(f"^{pattern}$"), cast(Handler, handler))
    for method, pattern, handler in [
        ("GET", "/v1/account", connect.retrieve_account),
        ("POST", "/v1/accounts", connect.create_account),
        ("GET", "/v1/accounts", connect.list_accounts),
        ("GET", f"/v1/accounts/{_ID}", connect.retrieve_account),
        ("POST", f"/v1/accounts/{_ID}", connect.update_account),
        ("POST", "/v1/account_links", connect.create_account_link),
        ("POST", "/v1/transfers", connect.create_transfer),
        ("GET", "/v1/transfers", connect.list_transfers),
        ("GET", f"/v1/transfers/{_ID}", connect.retrieve_transfer),
        ("POST", f"/v1/transfers/{_ID}", connect.update_transfer),
        ("POST", f"/v1/transfers/{_ID}/reversals", connect.create_reversal),
        ("GET", f"/v1/transfers/{_ID}/reversals", connect.list_reversals),
        ("GET", f"/v1/transfers/{_ID}/reversals/{_ID}", connect.retrieve_reversal),
        ("GET", "/v1/balance", connect.retrieve_balance),
        ("GET", "/v1/balance_transactions", connect.list_balance_transactions),
        ("GET", f"/v1/balance_transactions/{_ID}", connect.retrieve_balance_transaction),
        ("POST", "/v1/payouts", connect.create_payout),
        ("GET", "/v1/payouts", connect.list_payouts),
        ("GET", f"/v1/payouts/{_ID}", connect.retrieve_payout),
        ("POST", "/v1/customers", payments.create_customer),
        ("GET", f"/v1/customers/{_ID}", payments.retrieve_customer),
        ("POST", f"/v1/customers/{_ID}", payments.update_customer),
        ("GET", f"/v1/customers/{_ID}/payment_methods", payments.list_customer_payment_methods),
        ("POST", "/v1/payment_methods", payments.create_payment_method),
        ("GET", "/v1/payment_methods", payments.list_payment_methods),
        ("GET", f"/v1/payment_methods/{_ID}", payments.retrieve_payment_method),
        ("POST", f"/v1/payment_methods/{_ID}/attach", payments.attach_payment_method),
        ("POST", f"/v1/payment_methods/{_ID}/detach", payments.detach_payment_method),
        ("POST", "/v1/payment_intents", payments.create_payment_intent),
        ("GET", "/v1/payment_intents", payments.list_payment_intents),
        ("GET", f"/v1/payment_intents/{_ID}", payments.retrieve_payment_intent),
        ("POST", f"/v1/payment_intents/{_ID}", payments.update_payment_intent),
        ("POST", f"/v1/payment_intents/{_ID}/confirm", payments.confirm_payment_intent),
        ("POST", f"/v1/payment_intents/{_ID}/cancel", payments.cancel_payment_intent),
        ("GET", "/v1/charges", payments.list_charges),
        ("GET", f"/v1/charges/{_ID}", payments.retrieve_charge),
        ("GET", "/v1/events", events.list_events),
        ("GET", f"/v1/events/{_ID}", events.retrieve_event),
        ("POST", "/v1/webhook_endpoints", events.create_webhook_endpoint),
        ("GET", "/v1/webhook_endpoints", events.list_webhook_endpoints),
        ("GET", f"/v1/webhook_endpoints/{_ID}", events.retrieve_webhook_endpoint),
        ("POST", f"/v1/webhook_endpoints/{_ID}", events.update_webhook_endpoint),
        ("DELETE", f"/v1/webhook_endpoints/{_ID}", events.delete_webhook_endpoint),
    ]
]


def route(method: str, path: str) -> tuple[Handler, tuple[str, ...]]:
    allowed = False
    for route_method, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        if route_method == method:
            return handler, match.groups()
        allowed = True
    if allowed:
        raise StripeError(405, f"Unrecognized request URL ({method}: {path}).", stored=False)
    raise StripeError(
        404,
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we "
        "can help at https://support.stripe.com/.",
        stored=False,
    )
