"""The settlement domain's HTTP API, one module per area."""

from coalition.settlement.controllers import (
    ledger,
    payouts,
    reconciliation,
    statements,
    stripe_webhooks,
)

ANSWERED_AS = payouts.ANSWERED_AS

ROUTES = [
    *ledger.ROUTES,
    *statements.ROUTES,
    *payouts.ROUTES,
    *stripe_webhooks.ROUTES,
    *reconciliation.ROUTES,
]
