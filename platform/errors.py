"""The `DomainError` tree and its one mapping to RFC 9457 problem+json responses.

Every error a client can see carries a stable machine-readable `code`; validation errors also
name the offending `field`. Unexpected exceptions become a plain 500 without internals.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import structlog
from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("coalition.errors")


class DomainError(Exception):
    """Base of every business error. Subclasses set `status_code`, `code` and `title`."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, *, field: str | None = None, **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.field = field
        self.extra = extra
        self.headers: dict[str, str] = {}


class NotFound(DomainError):
    status_code, code, title = 404, "not_found", "Not found"


class Unauthorized(DomainError):
    status_code, code, title = 401, "unauthorized", "Authentication required"


class InvalidCredentials(Unauthorized):
    code, title = "invalid_credentials", "Wrong email or password"


class InvalidToken(Unauthorized):
    code, title = "invalid_token", "The token is not valid"


class TokenExpired(Unauthorized):
    code, title = "token_expired", "The token has expired"


class Forbidden(DomainError):
    status_code, code, title = 403, "forbidden", "Not allowed for this role"


class Conflict(DomainError):
    status_code, code, title = 409, "conflict", "Conflicts with the current state"


class ValidationFailed(DomainError):
    status_code, code, title = 422, "validation_error", "The request is not valid"


class RateLimited(DomainError):
    status_code, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None):
        super().__init__(detail)
        self.headers["Retry-After"] = str(retry_after)


_STATUS_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("body_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "The request is not valid"),
    429: ("rate_limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


def problem(
    request: Request[Any, Any, Any],
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **members: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail or title,
        "instance": request.url.path,
    }
    request_id = request.scope.get("state", {}).get("request_id")
    if not request_id:
        # No route matched, so the request-id middleware never ran: make the id here.
        request_id = uuid.uuid4().hex
        headers = {**(headers or {}), "x-request-id": request_id}
    body["request_id"] = request_id
    body.update({k: v for k, v in members.items() if v is not None})
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return problem(
        request,
        status=exc.status_code,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers or None,
        field=exc.field,
        **exc.extra,
    )


def answered_as(
    error: type[DomainError],
) -> Callable[[Request[Any, Any, Any], Exception], Response[Any]]:
    """A handler for an exception raised outside the `DomainError` tree (by an adapter, say)
    that answers it exactly as `error`, with the exception's message as the detail."""

    def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        return domain_error_handler(request, error(str(exc)))

    return handler


_MSGSPEC_PATH = re.compile(r"at `\$((?:\.[A-Za-z_][\w]*|\[\d+\])*)`")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def field_of(message: str, key: str | None) -> str | None:
    """The offending field: from msgspec's message for body errors, else the parameter name."""
    if key and key != "data":
        unknown = _UNKNOWN_FIELD.search(message)
        if unknown and not key.endswith(unknown.group(1)):
            return f"{key}.{unknown.group(1)}"
        return key
    path = _MSGSPEC_PATH.search(message)
    unknown = _UNKNOWN_FIELD.search(message)
    if path and path.group(1):
        parts = path.group(1).lstrip(".")
        if unknown and not parts.endswith(unknown.group(1)):
            return f"{parts}.{unknown.group(1)}" if parts else unknown.group(1)
        return parts
    if unknown:
        return unknown.group(1)
    missing = re.search(r"missing required field `([^`]+)`", message)
    return missing.group(1) if missing else None


def validation_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors: list[dict[str, Any]] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        message = str(item.get("message", "")) if isinstance(item, dict) else str(item)
        key = item.get("key") if isinstance(item, dict) else None
        source = item.get("source") if isinstance(item, dict) else None
        errors.append(
            {"field": field_of(message, key), "message": message, "source": source or "body"}
        )
    detail = str(exc.detail)
    if not errors:
        errors.append({"field": field_of(detail, None), "message": detail, "source": "body"})
    first = errors[0]
    return problem(
        request,
        status=422,
        code="validation_error",
        title="The request is not valid",
        detail=first["message"] or detail,
        field=first["field"],
        errors=errors,
    )


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    code, title = _STATUS_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    if type(exc) is ClientException and exc.status_code == 400:
        # Litestar raises a bare ClientException when the body cannot be decoded at all.
        code, title = "malformed_body", "The request body is not valid JSON"
    return problem(
        request,
        status=exc.status_code,
        code=code,
        title=title,
        detail=str(exc.detail) if exc.detail else title,
        headers=dict(exc.headers) if exc.headers else None,
    )


def _is_contention(exc: Exception) -> bool:
    """A deadlock or serialization failure: the request did nothing and may simply be retried."""
    import asyncpg
    from sqlalchemy.exc import DBAPIError

    cause: Any = exc.orig if isinstance(exc, DBAPIError) else exc
    seen = 0
    while cause is not None and seen < 5:
        if isinstance(cause, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
            return True
        cause = getattr(cause, "__cause__", None) or getattr(cause, "orig", None)
        seen += 1
    return False


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if _is_contention(exc):
        log.warning("request_contention", path=request.url.path, error=str(exc)[:200])
        return problem(
            request,
            status=503,
            code="temporarily_busy",
            title="Busy: nothing was changed, try again",
            headers={"Retry-After": "1"},
        )
    log.exception("unhandled_error", path=request.url.path, exc_info=exc)
    return problem(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        code="internal_error",
        title="Internal server error",
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: domain_error_handler,
    ValidationException: validation_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
