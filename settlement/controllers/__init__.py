"""The settlement domain's HTTP API, one module per area."""

from coalition.settlement.controllers import ledger, payouts, statements

ROUTES = [*ledger.ROUTES, *statements.ROUTES, *payouts.ROUTES]
