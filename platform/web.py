"""The web shell of the portal: server-rendered Jinja pages under `/portal` (and the public coupon
page `/c/<code>`), an encrypted session cookie, CSRF tokens on every form, role-based navigation
and the reader's language.

- **Session**: one cookie, `coalition_portal`, encrypted and authenticated (Fernet, keyed from the
  JWT key set, so rotating those keys also rotates sessions), HttpOnly, SameSite=Lax, Secure in
  production. A staff session holds the refresh token of an ordinary API login: every request
  checks it is neither revoked nor expired and that the user and organization are still active,
  so logout, deactivation and suspension end portal sessions at once. A customer session holds
  the customer token.
- **CSRF**: the session carries a random token; every POST must send it back as the `_csrf` form
  field (or `X-CSRF-Token` header) or it is refused with 403 before the handler runs.
- **Pages** are thin controllers in each domain's `controllers/portal_*.py`, calling the same
  services as the API; templates live in the domain's `templates/` folder.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from jinja2 import Environment, FileSystemLoader, PrefixLoader, select_autoescape
from litestar import Request, Response, Router
from litestar.datastructures import Cookie
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap

from coalition.platform.auth import Principal
from coalition.platform.errors import DomainError, Forbidden, Unauthorized, field_of
from coalition.platform.i18n import LANGUAGE_NAMES, LANGUAGES, Translator, negotiate
from coalition.platform.settings import Settings

SESSION_COOKIE = "coalition_portal"
LANGUAGE_COOKIE = "coalition_lang"
SESSION_TTL_SECONDS = 12 * 3600
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
STATIC_PATH = "/static/portal"
ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_FOLDERS = {
    "platform": ROOT / "platform" / "templates",
    "merchants": ROOT / "merchants" / "templates",
    "campaigns": ROOT / "campaigns" / "templates",
    "settlement": ROOT / "settlement" / "templates",
}
# Paths the bearer-token middleware leaves to the portal's own session handling.
PORTAL_PATHS = ["^/portal", "^/c/", f"^{STATIC_PATH}"]


class CsrfRefused(Forbidden):
    code, title = "csrf_failed", "The form's security token is missing or wrong"


class LoginRequired(Unauthorized):
    code, title = "login_required", "Please sign in"


# --- the session cookie -----------------------------------------------------------------------


class PortalSession(msgspec.Struct, kw_only=True):
    csrf: str
    issued_at: int
    kind: Literal["user", "customer"] | None = None
    refresh_token: str | None = None
    customer_token: str | None = None
    terminal_id: str | None = None  # the terminal a cashier operates on the web POS


def _fernet(settings: Settings) -> MultiFernet:
    ordered = [settings.jwt_keys[settings.jwt_active_kid]] + [
        secret for kid, secret in settings.jwt_keys.items() if kid != settings.jwt_active_kid
    ]
    return MultiFernet(
        [
            Fernet(
                base64.urlsafe_b64encode(
                    hmac.new(secret.encode(), b"coalition-portal-session", hashlib.sha256).digest()
                )
            )
            for secret in ordered
        ]
    )


def new_session(**values: Any) -> PortalSession:
    return PortalSession(csrf=secrets.token_urlsafe(24), issued_at=int(time.time()), **values)


def read_session(request: Request[Any, Any, Any], settings: Settings) -> PortalSession | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _fernet(settings).decrypt(raw.encode(), ttl=SESSION_TTL_SECONDS)
        return msgspec.json.decode(data, type=PortalSession)
    except (InvalidToken, msgspec.DecodeError, msgspec.ValidationError):
        return None


def session_cookie(settings: Settings, data: PortalSession | None) -> Cookie:
    secure = settings.environment == "production"
    if data is None:
        return Cookie(
            key=SESSION_COOKIE, value="", max_age=0, httponly=True, secure=secure, samesite="lax"
        )
    value = _fernet(settings).encrypt(msgspec.json.encode(data)).decode()
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        max_age=SESSION_TTL_SECONDS,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )


# --- navigation -------------------------------------------------------------------------------

STAFF_ROLES = ("admin", "marketing", "finance", "cashier")


@dataclass(frozen=True, slots=True)
class Area:
    """A section of the portal: its menu entry and who may open it."""

    path: str
    label: str
    roles: tuple[str, ...]
    org_kinds: tuple[str, ...] = ("carrier", "merchant")
    in_menu: bool = True


AREAS: dict[str, Area] = {
    "dashboard": Area("/portal", "Dashboard", ("admin", "marketing", "finance")),
    "proposals": Area("/portal/proposals", "Proposals", ("admin", "marketing")),
    "campaigns": Area("/portal/campaigns", "Campaigns", ("admin", "marketing", "finance")),
    "partners": Area("/portal/partners", "Partners", ("admin", "marketing"), ("carrier",)),
    "statements": Area("/portal/statements", "Statements", ("admin", "finance")),
    "statement_approval": Area("/portal/statements", "Statements", ("finance",), in_menu=False),
    "payouts": Area("/portal/payouts", "Payouts", ("admin", "finance")),
    "payout_retry": Area("/portal/payouts", "Payouts", ("finance",), in_menu=False),
    "reconciliation": Area("/portal/reconciliation", "Reconciliation", ("admin", "finance")),
    "reconciliation_request": Area(
        "/portal/reconciliation", "Reconciliation", ("admin", "finance"), ("carrier",), False
    ),
    "stores": Area("/portal/stores", "Stores", ("admin",)),
    "terminals": Area("/portal/terminals", "Terminals", ("admin",)),
    "staff": Area("/portal/staff", "Staff", ("admin",)),
    "api_keys": Area("/portal/api-keys", "API keys", ("admin",)),
    "webhooks": Area("/portal/webhooks", "Webhooks", ("admin",)),
    "audit_log": Area("/portal/audit-log", "Audit log", ("admin",)),
    "pos": Area("/portal/pos", "Web POS", ("cashier", "admin")),
}


def home_of(principal: Principal) -> str:
    """Where a user lands after signing in."""
    return "/portal/pos" if principal.role == "cashier" else "/portal"


# --- who is asking ----------------------------------------------------------------------------


@dataclass(slots=True)
class StaffIdentity:
    principal: Principal
    display_name: str
    email: str
    org_name: str
    org_timezone: str


@dataclass(slots=True)
class Visitor:
    """Whoever opened a portal page: their session (if any), language and identity."""

    request: Request[Any, Any, Any]
    settings: Settings
    language: str
    session: PortalSession
    staff: StaffIdentity | None = None
    customer: Principal | None = None
    session_changed: bool = False
    area: str | None = None
    extra_cookies: list[Cookie] = field(default_factory=list)

    @property
    def t(self) -> Translator:
        zone = self.staff.org_timezone if self.staff else "Asia/Shanghai"
        return Translator(
            self.language, mark_missing=self.settings.environment != "production", timezone=zone
        )

    @property
    def principal(self) -> Principal:
        if self.staff is None:
            raise LoginRequired()
        return self.staff.principal

    def enter(self, area: str) -> Principal:
        """The signed-in staff member, allowed into `area` by role, else 401 / 403."""
        principal = self.principal
        rules = AREAS[area]
        if principal.role not in rules.roles or principal.org_kind not in rules.org_kinds:
            raise Forbidden("Your role cannot open this page")
        self.area = area
        return principal

    def customer_principal(self) -> Principal:
        if self.customer is None:
            raise LoginRequired("Please sign in with your phone number")
        return self.customer

    def menu(self) -> list[tuple[str, str, bool]]:
        if self.staff is None:
            return []
        principal = self.staff.principal
        return [
            (area.path, area.label, key == self.area)
            for key, area in AREAS.items()
            if area.in_menu
            and principal.role in area.roles
            and principal.org_kind in area.org_kinds
        ]

    def replace_session(self, session: PortalSession | None) -> None:
        self.session = session or new_session()
        self.session_changed = True

    def cookies(self) -> list[Cookie]:
        cookies = list(self.extra_cookies)
        if self.session_changed:
            cookies.append(session_cookie(self.settings, self.session))
        return cookies


def language_of(request: Request[Any, Any, Any]) -> str:
    return negotiate(request.headers.get("accept-language"), request.cookies.get(LANGUAGE_COOKIE))


async def provide_visitor(request: Request[Any, Any, Any]) -> Visitor:
    """Read the session cookie and resolve who it belongs to (in its own database session)."""
    from coalition.merchants.services.identity import portal_identity

    state = request.app.state
    settings: Settings = state.settings
    data = read_session(request, settings)
    visitor = Visitor(
        request=request,
        settings=settings,
        language=language_of(request),
        session=data or new_session(),
        session_changed=data is None,
    )
    if data is None or data.kind is None:
        return visitor
    try:
        async with state.sessionmaker() as db:
            if data.kind == "user" and data.refresh_token:
                found = await portal_identity(db, refresh_token=data.refresh_token)
                visitor.staff = StaffIdentity(
                    principal=found.principal,
                    display_name=found.display_name,
                    email=found.email,
                    org_name=found.org_name,
                    org_timezone=found.org_timezone,
                )
            elif data.kind == "customer" and data.customer_token:
                customer = await state.resolve_principal(db, settings, data.customer_token)
                if customer.kind == "customer":
                    visitor.customer = customer
    except (Unauthorized, Forbidden):
        # Revoked, expired, deactivated or suspended: the session is over.
        visitor.replace_session(new_session())
    return visitor


# --- CSRF -------------------------------------------------------------------------------------


async def check_csrf(request: Request[Any, Any, Any]) -> None:
    """Refuse any unsafe request whose CSRF token does not match the session's."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    data = read_session(request, request.app.state.settings)
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if data is None or not sent or not hmac.compare_digest(sent.encode(), data.csrf.encode()):
        raise CsrfRefused()


# --- rendering --------------------------------------------------------------------------------

_environment = Environment(
    loader=PrefixLoader(
        {name: FileSystemLoader(str(folder)) for name, folder in TEMPLATE_FOLDERS.items()}
    ),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def template_environment() -> Environment:
    return _environment


def display_code(code: str) -> str:
    """A stored coupon code in groups of four, as printed on coupons."""
    from coalition.campaigns.codes import display

    return display(code)


def render_html(
    template: str,
    *,
    translator: Translator,
    visitor: Visitor | None,
    **context: Any,
) -> str:
    return _environment.get_template(template).render(
        _=translator.gettext,
        t=translator,
        visitor=visitor,
        csrf=visitor.session.csrf if visitor else "",
        csrf_field=CSRF_FIELD,
        lang=translator.language,
        languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        path=visitor.request.url.path if visitor else "",
        static=STATIC_PATH,
        show_code=display_code,
        **context,
    )


def page(visitor: Visitor, template: str, *, status: int = 200, **context: Any) -> Response[str]:
    """A rendered page in the visitor's language, with any session change written back."""
    html = render_html(template, translator=visitor.t, visitor=visitor, **context)
    return Response(
        html,
        status_code=status,
        media_type="text/html; charset=utf-8",
        cookies=visitor.cookies(),
        headers={"Cache-Control": "no-store", "Content-Language": visitor.language},
    )


def redirect(visitor: Visitor, url: str) -> Redirect:
    """303 See Other (the answer to a form POST), keeping the session up to date."""
    return Redirect(url, status_code=303, cookies=visitor.cookies())


def safe_next(target: str | None, default: str) -> str:
    """Only same-site portal paths are followed after sign-in (no open redirects)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith(("/portal", "/c/")):
        return default
    return target


@dataclass(frozen=True, slots=True)
class FieldErrors:
    """Errors of a submitted form, by field, already in the reader's language."""

    by_field: dict[str, str] = field(default_factory=dict)
    general: str | None = None

    def __bool__(self) -> bool:
        return bool(self.by_field or self.general)

    def get(self, name: str) -> str | None:
        return self.by_field.get(name)


FiltersT = TypeVar("FiltersT", bound=msgspec.Struct)


def filter_query(request: Request[Any, Any, Any], filters: type[msgspec.Struct]) -> dict[str, str]:
    """A list page's filters as typed in its query string: the non-empty parameters naming a
    field of `filters`, without the offset (what the pager's links carry on)."""
    fields = filters.__struct_fields__
    return {
        k: str(v)
        for k, v in request.query_params.items()
        if k in fields and k != "offset" and v not in ("", None)
    }


def parse_filters(
    request: Request[Any, Any, Any], query: dict[str, str], filters: type[FiltersT]
) -> FiltersT:
    """`query` (from `filter_query`) and the page's offset as `filters`; raises
    `msgspec.ValidationError` naming the field at fault."""
    offset = request.query_params.get("offset") or "0"
    return msgspec.convert({**query, "offset": offset}, filters, strict=False)


def pager_links(
    query: dict[str, str], offset: int, total: int, page_size: int
) -> dict[str, str | None]:
    """The query strings of the previous and next pages of a list (None at either end)."""
    return {
        "previous": urlencode({**query, "offset": max(offset - page_size, 0)}) if offset else None,
        "next": urlencode({**query, "offset": offset + page_size})
        if offset + page_size < total
        else None,
    }


def form_errors(translator: Translator, error: Exception) -> FieldErrors:
    """Turn a refused form (schema validation or a business refusal) into per-field messages."""
    if isinstance(error, msgspec.ValidationError):
        name = field_of(str(error), None)
        text = translator.error("validation_error")
        return FieldErrors(by_field={name: text} if name else {}, general=text)
    if isinstance(error, DomainError):
        text = translator.error(error.code, error.title)
        fields = [error.field] if error.field else []
        for problem in error.extra.get("errors") or []:
            if isinstance(problem, dict) and problem.get("field"):
                fields.append(str(problem["field"]))
        return FieldErrors(by_field=dict.fromkeys(fields, text), general=text)
    raise error


def parse_form(form: Any, struct: type[msgspec.Struct], **overrides: Any) -> Any:
    """Build an API request struct from form fields (empty fields left out), so the page is
    checked by exactly the rules the API applies; `msgspec.ValidationError` if it breaks them."""
    values: dict[str, Any] = {
        name: value
        for name, value in form.items()
        if name != CSRF_FIELD and name in struct.__struct_fields__ and value != ""
    }
    values.update(overrides)
    return msgspec.convert(values, struct, strict=False)


# --- errors on pages --------------------------------------------------------------------------


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    settings: Settings = request.app.state.settings
    translator = Translator(language_of(request), mark_missing=settings.environment != "production")
    path = request.url.path
    if isinstance(exc, Unauthorized) and not isinstance(exc, CsrfRefused):
        login = "/portal/customer/login" if path.startswith(("/portal/customer", "/c/")) else None
        target = login or "/portal/login"
        return Redirect(f"{target}?next={quote(path)}", status_code=303)
    if isinstance(exc, DomainError):
        status, code, title = exc.status_code, exc.code, exc.title
    elif isinstance(exc, ValidationException):
        status, code, title = 400, "bad_request", "Bad request"
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            status, "bad_request"
        )
        title = str(exc.detail)
    else:
        raise exc
    html = render_html(
        "platform/error.html",
        translator=translator,
        visitor=None,
        status=status,
        message=translator.error(code, title),
        code=code,
    )
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def _error_page_as(
    error: type[DomainError],
) -> Callable[[Request[Any, Any, Any], Exception], Response[Any]]:
    def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        return _error_page(request, error(str(exc)))

    return handler


def portal_router(
    path: str,
    handlers: Sequence[ControllerRouterHandler],
    answered_as: Mapping[type[Exception], type[DomainError]] | None = None,
) -> Router:
    """A router of portal pages: visitor dependency, CSRF check, errors rendered as pages
    (`answered_as`: exceptions outside the DomainError tree and the error each one shows)."""
    handlers_by_error: ExceptionHandlersMap = {
        DomainError: _error_page,
        HTTPException: _error_page,
    }
    for kind, error in (answered_as or {}).items():
        handlers_by_error[kind] = _error_page_as(error)
    return Router(
        path=path,
        route_handlers=list(handlers),
        dependencies={"visitor": Provide(provide_visitor)},
        before_request=check_csrf,
        exception_handlers=handlers_by_error,
        include_in_schema=False,
    )


def static_router() -> ControllerRouterHandler:
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[ROOT / "platform" / "static"],
        include_in_schema=False,
        opt={"exclude_from_auth": True},
    )


def new_idempotency_key() -> str:
    return f"portal-{uuid.uuid4().hex}"
