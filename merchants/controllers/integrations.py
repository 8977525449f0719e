"""HTTP API of integrations: API keys, webhook endpoints, the delivery log and replays."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.schemas.integrations import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyRead,
    CurrentApiKeyRead,
    WebhookDeliveryDetail,
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointDetail,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
)
from coalition.merchants.services import api_keys, webhooks
from coalition.merchants.services.api_keys import scope_guard
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard

DeliveryStatus = Annotated[
    str | None, Parameter(query="status", pattern="^(pending|succeeded|failed)$")
]


class ApiKeyController(Controller):
    """Server-to-server keys of an organization, managed by its admins (or carrier admins)."""

    path = "/api/v1"
    tags = ["api keys"]

    @post(
        "/organizations/{org_id:uuid}/api-keys",
        guards=[role_guard("admin")],
        status_code=HTTP_201_CREATED,
    )
    async def issue(
        self, org_id: uuid.UUID, data: ApiKeyCreate, session: AsyncSession, principal: Principal
    ) -> ApiKeyIssued:
        """Issue a key with scopes. The key (`cak_...`) is in this response only: store it."""
        key, secret = await api_keys.issue_api_key(session, principal, org_id, data)
        return ApiKeyIssued(api_key=api_keys.api_key_read(key), key=secret)

    @get("/organizations/{org_id:uuid}/api-keys", guards=[role_guard("admin")])
    async def list_keys(
        self,
        org_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
    ) -> Page[ApiKeyRead]:
        """The organization's keys, newest first (never the key itself)."""
        rows, total = await api_keys.list_api_keys(
            session, principal, org_id, limit=limit, offset=offset
        )
        return Page(
            items=[api_keys.api_key_read(k) for k in rows], limit=limit, offset=offset, total=total
        )

    @get("/api-keys/current", guards=[role_guard(kinds=("api_key",))])
    async def current(self, session: AsyncSession, principal: Principal) -> CurrentApiKeyRead:
        """The API key this request is made with: its organization, name and scopes."""
        return await api_keys.current_api_key(session, principal)

    @get("/api-keys/{key_id:uuid}", guards=[role_guard("admin")])
    async def get_key(
        self, key_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> ApiKeyRead:
        return api_keys.api_key_read(await api_keys.get_api_key(session, principal, key_id))

    @post("/api-keys/{key_id:uuid}/revoke", guards=[role_guard("admin")], status_code=HTTP_200_OK)
    async def revoke(
        self, key_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> ApiKeyRead:
        """Revoke a key: requests made with it are refused from now on."""
        return api_keys.api_key_read(await api_keys.revoke_api_key(session, principal, key_id))


class WebhookController(Controller):
    """Webhook endpoints and their deliveries: the organization's admins, or its API keys with
    the `webhooks:manage` scope (carrier admins for every organization)."""

    path = "/api/v1"
    tags = ["webhooks"]
    guards = [scope_guard("webhooks:manage", roles=("admin",))]

    @post("/organizations/{org_id:uuid}/webhooks", status_code=HTTP_201_CREATED)
    async def create_endpoint(
        self,
        org_id: uuid.UUID,
        data: WebhookEndpointCreate,
        session: AsyncSession,
        principal: Principal,
    ) -> WebhookEndpointDetail:
        """Register an endpoint. The response carries its signing secret (`whsec_...`)."""
        endpoint = await webhooks.create_endpoint(session, principal, org_id, data)
        return webhooks.endpoint_detail(endpoint)

    @get("/organizations/{org_id:uuid}/webhooks")
    async def list_endpoints(
        self,
        org_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
    ) -> Page[WebhookEndpointRead]:
        rows, total = await webhooks.list_endpoints(
            session, principal, org_id, limit=limit, offset=offset
        )
        return Page(
            items=[webhooks.endpoint_read(e) for e in rows], limit=limit, offset=offset, total=total
        )

    @get("/webhooks/{endpoint_id:uuid}")
    async def get_endpoint(
        self, endpoint_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> WebhookEndpointDetail:
        """One endpoint with its signing secret."""
        return webhooks.endpoint_detail(
            await webhooks.get_endpoint(session, principal, endpoint_id)
        )

    @patch("/webhooks/{endpoint_id:uuid}")
    async def update_endpoint(
        self,
        endpoint_id: uuid.UUID,
        data: WebhookEndpointUpdate,
        session: AsyncSession,
        principal: Principal,
    ) -> WebhookEndpointDetail:
        """Change the URL, event types, description, or enable / disable the endpoint."""
        endpoint = await webhooks.update_endpoint(session, principal, endpoint_id, data)
        return webhooks.endpoint_detail(endpoint)

    @delete("/webhooks/{endpoint_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def delete_endpoint(
        self, endpoint_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> None:
        """Delete the endpoint and its delivery log (disable it instead to keep the log)."""
        await webhooks.delete_endpoint(session, principal, endpoint_id)

    @post("/webhooks/{endpoint_id:uuid}/rotate-secret", status_code=HTTP_200_OK)
    async def rotate_secret(
        self, endpoint_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> WebhookEndpointDetail:
        """A new signing secret, used from the next attempt on; the old one stops at once."""
        return webhooks.endpoint_detail(
            await webhooks.rotate_secret(session, principal, endpoint_id)
        )

    @get("/webhooks/{endpoint_id:uuid}/deliveries")
    async def list_deliveries(
        self,
        endpoint_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        status: DeliveryStatus = None,
    ) -> Page[WebhookDeliveryRead]:
        """The endpoint's deliveries, newest first, optionally of one `status`."""
        rows, total = await webhooks.list_deliveries(
            session, principal, endpoint_id, status=status, limit=limit, offset=offset
        )
        return Page(
            items=[webhooks.delivery_read(d) for d in rows],
            limit=limit,
            offset=offset,
            total=total,
        )

    @get("/webhook-deliveries/{delivery_id:uuid}")
    async def get_delivery(
        self, delivery_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> WebhookDeliveryDetail:
        """One delivery: the payload sent and every attempt (status code or error, duration)."""
        delivery, attempts = await webhooks.get_delivery(session, principal, delivery_id)
        return webhooks.delivery_detail(delivery, attempts)

    @post("/webhook-deliveries/{delivery_id:uuid}/replay", status_code=HTTP_201_CREATED)
    async def replay(
        self, delivery_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> WebhookDeliveryDetail:
        """Send the event again as a new delivery (same event id and payload, `replay_of` set)."""
        replay = await webhooks.replay_delivery(session, principal, delivery_id)
        return webhooks.delivery_detail(replay, [])


ROUTES = [ApiKeyController, WebhookController]
