"""The merchants domain's HTTP API, one module per area."""

from coalition.merchants.controllers import identity, organizations, staff

ROUTES = [*identity.ROUTES, *organizations.ROUTES, *staff.ROUTES]
