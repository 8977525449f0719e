"""Portal pages of the merchants domain: sign in and out, the language switch, and a partner's
own administration (stores, terminals with their key shown once, staff, API keys, webhooks
with their delivery log, audit log). Each handler is one service call; the services enforce
tenancy and roles exactly as for the API."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import Parameter
from litestar.response import Redirect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.controllers.identity import client_ip
from coalition.merchants.models import INDUSTRIES
from coalition.merchants.schemas.identity import AcceptInvitationRequest
from coalition.merchants.schemas.integrations import ApiKeyCreate, WebhookEndpointCreate
from coalition.merchants.schemas.organizations import InviteMerchantRequest
from coalition.merchants.schemas.staff import InviteStaffRequest
from coalition.merchants.schemas.stores import StoreCreate
from coalition.merchants.schemas.terminals import RegisterTerminalRequest
from coalition.merchants.services import (
    api_keys,
    audit_log,
    directory,
    identity,
    organizations,
    staff,
    stores,
    terminals,
    webhooks,
)
from coalition.merchants.services.api_keys import API_KEY_SCOPES
from coalition.merchants.services.webhooks import EVENT_TYPES
from coalition.platform.errors import DomainError
from coalition.platform.i18n import LANGUAGES
from coalition.platform.settings import Settings
from coalition.platform.web import (
    LANGUAGE_COOKIE,
    FieldErrors,
    Visitor,
    form_errors,
    home_of,
    new_session,
    page,
    parse_form,
    redirect,
    safe_next,
)

PAGE = 100


# --- sign in / out, language ------------------------------------------------------------------


@get("/login")
async def login_page(
    visitor: Visitor, next_path: Annotated[str | None, Parameter(query="next")] = None
) -> Response[str]:
    return page(visitor, "platform/login.html", errors=FieldErrors(), next=next_path, email="")


@post("/login")
async def login_submit(
    request: Request[Any, Any, Any],
    visitor: Visitor,
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
) -> Response[Any]:
    form = await request.form()
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    try:
        tokens = await identity.login(
            session, redis, settings, email=email, password=password, client_ip=client_ip(request)
        )
        found = await identity.portal_identity(session, refresh_token=tokens.refresh_token)
    except DomainError as error:
        return page(
            visitor,
            "platform/login.html",
            status=error.status_code,
            errors=form_errors(visitor.t, error),
            email=email,
            next=form.get("next"),
        )
    # A new session (and CSRF token) at every sign-in: no fixation.
    visitor.replace_session(new_session(kind="user", refresh_token=tokens.refresh_token))
    return redirect(visitor, safe_next(form.get("next"), home_of(found.principal)))


@post("/logout")
async def logout(visitor: Visitor, session: AsyncSession) -> Redirect:
    target = "/portal/customer/login" if visitor.customer else "/portal/login"
    if visitor.session.refresh_token:
        await identity.end_portal_session(session, refresh_token=visitor.session.refresh_token)
    visitor.replace_session(new_session())
    return redirect(visitor, target)


@post("/language")
async def switch_language(request: Request[Any, Any, Any], visitor: Visitor) -> Redirect:
    form = await request.form()
    language = str(form.get("lang", ""))
    if language in LANGUAGES:
        visitor.extra_cookies.append(
            Cookie(
                key=LANGUAGE_COOKIE,
                value=language,
                max_age=365 * 86400,
                samesite="lax",
                path="/",
                httponly=True,
                secure=visitor.settings.environment == "production",
            )
        )
    return redirect(visitor, safe_next(form.get("next"), "/portal"))


# --- invitations: the link an invited user opens -----------------------------------------


@get("/invitations/{token:str}")
async def invitation_page(token: str, visitor: Visitor) -> Response[str]:
    return page(visitor, "merchants/invitation.html", token=token, errors=FieldErrors())


@post("/invitations/{token:str}")
async def accept_invitation(
    token: str, request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    form = await request.form()
    try:
        data = parse_form(form, AcceptInvitationRequest, token=token)
        await organizations.accept_invitation(
            session, token=data.token, password=data.password, display_name=data.display_name
        )
    except (DomainError, msgspec.ValidationError) as error:
        await session.rollback()
        return page(
            visitor,
            "merchants/invitation.html",
            status=422 if isinstance(error, msgspec.ValidationError) else error.status_code,
            token=token,
            errors=form_errors(visitor.t, error),
        )
    return redirect(visitor, "/portal/login")


# --- stores -----------------------------------------------------------------------------------


async def _stores_page(
    visitor: Visitor, session: AsyncSession, *, errors: FieldErrors, values: Any, status: int = 200
) -> Response[str]:
    principal = visitor.enter("stores")
    rows, total = await stores.list_stores(
        session, principal, principal.org_id, status=None, city=None, limit=PAGE, offset=0
    )
    return page(
        visitor,
        "merchants/stores.html",
        status=status,
        stores=rows,
        total=total,
        errors=errors,
        values=values,
    )


@get("/stores")
async def stores_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    return await _stores_page(visitor, session, errors=FieldErrors(), values={})


@post("/stores")
async def add_store(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    principal = visitor.enter("stores")
    form = await request.form()
    try:
        data = parse_form(form, StoreCreate)
        await stores.add_store(session, principal, principal.org_id, data)
    except (DomainError, msgspec.ValidationError) as error:
        await session.rollback()
        return await _stores_page(
            visitor,
            session,
            errors=form_errors(visitor.t, error),
            values=form,
            status=422,
        )
    return redirect(visitor, "/portal/stores")


@post("/stores/{store_id:uuid}/archive")
async def archive_store(store_id: uuid.UUID, visitor: Visitor, session: AsyncSession) -> Redirect:
    await stores.archive_store(session, visitor.enter("stores"), store_id)
    return redirect(visitor, "/portal/stores")


# --- terminals: the key is shown once ---------------------------------------------------------


async def _terminals_page(
    visitor: Visitor,
    session: AsyncSession,
    *,
    errors: FieldErrors,
    issued: terminals.IssuedTerminalKey | None = None,
    status: int = 200,
) -> Response[str]:
    principal = visitor.enter("terminals")
    rows, _ = await terminals.list_org_terminals(
        session, principal, principal.org_id, status=None, store_id=None, limit=PAGE, offset=0
    )
    store_rows, _ = await stores.list_stores(
        session, principal, principal.org_id, status="active", city=None, limit=PAGE, offset=0
    )
    return page(
        visitor,
        "merchants/terminals.html",
        status=status,
        terminals=rows,
        stores={s.id: s for s in store_rows},
        errors=errors,
        issued=issued,
    )


@get("/terminals")
async def terminals_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    return await _terminals_page(visitor, session, errors=FieldErrors())


@post("/terminals")
async def register_terminal(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[str]:
    principal = visitor.enter("terminals")
    form = await request.form()
    try:
        store_id = uuid.UUID(str(form.get("store_id", "")))
    except ValueError:
        return await _terminals_page(
            visitor,
            session,
            errors=FieldErrors(
                by_field={"store_id": visitor.t.error("store_required")},
                general=visitor.t.error("store_required"),
            ),
            status=422,
        )
    try:
        data = parse_form(form, RegisterTerminalRequest)
        issued = await terminals.register(session, principal, store_id, name=data.name)
    except (DomainError, msgspec.ValidationError) as error:
        await session.rollback()
        return await _terminals_page(
            visitor, session, errors=form_errors(visitor.t, error), status=422
        )
    # The key is in this answer only (never stored in clear, never shown again).
    return await _terminals_page(visitor, session, errors=FieldErrors(), issued=issued)


@post("/terminals/{terminal_id:uuid}/revoke")
async def revoke_terminal(
    terminal_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Redirect:
    await terminals.revoke(session, visitor.enter("terminals"), terminal_id)
    return redirect(visitor, "/portal/terminals")


# --- staff ------------------------------------------------------------------------------------


async def _staff_page(
    visitor: Visitor,
    session: AsyncSession,
    *,
    errors: FieldErrors,
    values: Any,
    invitation: staff.IssuedInvitation | None = None,
    status: int = 200,
) -> Response[str]:
    principal = visitor.enter("staff")
    users, _ = await staff.list_users(session, principal, principal.org_id, limit=PAGE, offset=0)
    return page(
        visitor,
        "merchants/staff.html",
        status=status,
        users=users,
        errors=errors,
        values=values,
        invitation=invitation,
    )


@get("/staff")
async def staff_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    return await _staff_page(visitor, session, errors=FieldErrors(), values={})


@post("/staff")
async def invite_staff(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession, settings: Settings
) -> Response[str]:
    principal = visitor.enter("staff")
    form = await request.form()
    try:
        data = parse_form(form, InviteStaffRequest)
        invitation = await staff.invite_staff(session, settings, principal, principal.org_id, data)
    except (DomainError, msgspec.ValidationError) as error:
        await session.rollback()
        return await _staff_page(
            visitor, session, errors=form_errors(visitor.t, error), values=form, status=422
        )
    return await _staff_page(
        visitor, session, errors=FieldErrors(), values={}, invitation=invitation
    )


@post("/staff/{user_id:uuid}/deactivate")
async def deactivate_user(user_id: uuid.UUID, visitor: Visitor, session: AsyncSession) -> Redirect:
    await staff.deactivate(session, visitor.enter("staff"), user_id)
    return redirect(visitor, "/portal/staff")


# --- API keys ---------------------------------------------------------------------------------


async def _api_keys_page(
    visitor: Visitor,
    session: AsyncSession,
    *,
    errors: FieldErrors,
    issued: str | None = None,
    status: int = 200,
) -> Response[str]:
    principal = visitor.enter("api_keys")
    keys, _ = await api_keys.list_api_keys(
        session, principal, principal.org_id, limit=PAGE, offset=0
    )
    return page(
        visitor,
        "merchants/api_keys.html",
        status=status,
        keys=keys,
        scopes=API_KEY_SCOPES,
        errors=errors,
        issued=issued,
    )


@get("/api-keys")
async def api_keys_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    return await _api_keys_page(visitor, session, errors=FieldErrors())


@post("/api-keys")
async def issue_api_key(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[str]:
    principal = visitor.enter("api_keys")
    form = await request.form()
    try:
        data = parse_form(form, ApiKeyCreate, scopes=form.getall("scopes", []))
        _, secret = await api_keys.issue_api_key(session, principal, principal.org_id, data)
    except (DomainError, msgspec.ValidationError) as error:
        await session.rollback()
        return await _api_keys_page(
            visitor, session, errors=form_errors(visitor.t, error), status=422
        )
    return await _api_keys_page(visitor, session, errors=FieldErrors(), issued=secret)


@post("/api-keys/{key_id:uuid}/revoke")
async def revoke_api_key(key_id: uuid.UUID, visitor: Visitor, session: AsyncSession) -> Redirect:
    await api_keys.revoke_api_key(session, visitor.enter("api_keys"), key_id)
    return redirect(visitor, "/portal/api-keys")


# --- webhooks ---------------------------------------------------------------------------------


async def _webhooks_page(
    visitor: Visitor, session: AsyncSession, *, errors: FieldErrors, status: int = 200
) -> Response[str]:
    principal = visitor.enter("webhooks")
    endpoints, _ = await webhooks.list_endpoints(
        session, principal, principal.org_id, limit=PAGE, offset=0
    )
    return page(
        visitor,
        "merchants/webhooks.html",
        status=status,
        endpoints=endpoints,
        event_types=EVENT_TYPES,
        errors=errors,
    )


@get("/webhooks")
async def webhooks_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    return await _webhooks_page(visitor, session, errors=FieldErrors())


@post("/webhooks")
async def create_webhook(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession
) -> Response[Any]:
    principal = visitor.enter("webhooks")
    form = await request.form()
    try:
        data = parse_form(form, WebhookEndpointCreate, event_types=form.getall("event_types", []))
        endpoint = await webhooks.create_endpoint(session, principal, principal.org_id, data)
    except (DomainError, msgspec.ValidationError) as error:
        await session.rollback()
        return await _webhooks_page(
            visitor, session, errors=form_errors(visitor.t, error), status=422
        )
    return redirect(visitor, f"/portal/webhooks/{endpoint.id}")


@get("/webhooks/{endpoint_id:uuid}")
async def webhook_page(
    endpoint_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Response[str]:
    principal = visitor.enter("webhooks")
    endpoint = await webhooks.get_endpoint(session, principal, endpoint_id)
    deliveries, total = await webhooks.list_deliveries(
        session, principal, endpoint_id, status=None, limit=PAGE, offset=0
    )
    return page(
        visitor,
        "merchants/webhook.html",
        endpoint=endpoint,
        deliveries=deliveries,
        total=total,
    )


@post("/webhook-deliveries/{delivery_id:uuid}/replay")
async def replay_delivery(
    delivery_id: uuid.UUID, visitor: Visitor, session: AsyncSession
) -> Redirect:
    delivery = await webhooks.replay_delivery(session, visitor.enter("webhooks"), delivery_id)
    return redirect(visitor, f"/portal/webhooks/{delivery.endpoint_id}")


# --- the carrier's partner directory and invitations -----------------------------------------


async def _partners_page(
    visitor: Visitor,
    session: AsyncSession,
    *,
    query: str | None,
    errors: FieldErrors,
    values: Any,
    invitation: Any = None,
    status: int = 200,
) -> Response[str]:
    principal = visitor.enter("partners")
    partners, total = await directory.search_partners(
        session,
        principal,
        industry=None,
        city=None,
        name=query or None,
        status=None,
        limit=PAGE,
        offset=0,
    )
    return page(
        visitor,
        "merchants/partners.html",
        status=status,
        partners=partners,
        total=total,
        query=query or "",
        industries=INDUSTRIES,
        errors=errors,
        values=values,
        invitation=invitation,
    )


@get("/partners")
async def partners_page(
    visitor: Visitor,
    session: AsyncSession,
    search: Annotated[str | None, Parameter(query="q", max_length=100)] = None,
) -> Response[str]:
    return await _partners_page(visitor, session, query=search, errors=FieldErrors(), values={})


@post("/partners/invitations")
async def invite_partner(
    request: Request[Any, Any, Any], visitor: Visitor, session: AsyncSession, settings: Settings
) -> Response[str]:
    principal = visitor.enter("partners")
    form = await request.form()
    cities = [c.strip() for c in str(form.get("cities", "")).split(",") if c.strip()]
    try:
        data = parse_form(form, InviteMerchantRequest, cities=cities)
        org, invitation = await organizations.invite_merchant(session, settings, principal, data)
    except (DomainError, msgspec.ValidationError) as error:
        await session.rollback()
        return await _partners_page(
            visitor,
            session,
            query=None,
            errors=form_errors(visitor.t, error),
            values=form,
            status=422,
        )
    return await _partners_page(
        visitor,
        session,
        query=None,
        errors=FieldErrors(),
        values={},
        invitation={"name": org.name, "url": invitation.url},
    )


# --- audit log --------------------------------------------------------------------------------


@get("/audit-log")
async def audit_log_page(visitor: Visitor, session: AsyncSession) -> Response[str]:
    principal = visitor.enter("audit_log")
    entries, total = await audit_log.list_entries(
        session,
        principal,
        org_id=principal.org_id,
        action=None,
        subject_id=None,
        since=None,
        limit=PAGE,
        offset=0,
    )
    return page(visitor, "merchants/audit_log.html", entries=entries, total=total)


PORTAL_PAGES = [
    login_page,
    login_submit,
    logout,
    switch_language,
    stores_page,
    add_store,
    archive_store,
    terminals_page,
    register_terminal,
    revoke_terminal,
    staff_page,
    invite_staff,
    deactivate_user,
    api_keys_page,
    issue_api_key,
    revoke_api_key,
    webhooks_page,
    create_webhook,
    webhook_page,
    replay_delivery,
    audit_log_page,
    invitation_page,
    accept_invitation,
    partners_page,
    invite_partner,
]
