"""The merchants domain's HTTP API, one module per area."""

from coalition.merchants.controllers import (
    identity,
    integrations,
    organizations,
    staff,
    stores,
    terminals,
)

ROUTES = [
    *identity.ROUTES,
    *organizations.ROUTES,
    *staff.ROUTES,
    *stores.ROUTES,
    *terminals.ROUTES,
    *integrations.ROUTES,
]
