"""The settlement domain's HTTP API, one module per area."""

from coalition.settlement.controllers import ledger, statements

ROUTES = [*ledger.ROUTES, *statements.ROUTES]
