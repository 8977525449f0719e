"""The campaigns domain's HTTP API, one module per area."""

from coalition.campaigns.controllers import (
    campaigns,
    coupons,
    customers,
    flags,
    issuance,
    online,
    pos,
    targets,
)

ROUTES = [
    *campaigns.ROUTES,
    *customers.ROUTES,
    *coupons.ROUTES,
    *issuance.ROUTES,
    *pos.ROUTES,
    *online.ROUTES,
    *flags.ROUTES,
    *targets.ROUTES,
]
