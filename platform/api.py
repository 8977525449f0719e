"""Building blocks shared by every HTTP API: strict request schemas and capped pagination."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

import msgspec
from litestar.exceptions import ClientException
from litestar.params import Parameter

from coalition.platform.errors import ValidationFailed, field_of

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

T = TypeVar("T")


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are an error, never silently assigned."""


def fields_set(data: msgspec.Struct) -> dict[str, Any]:
    """The fields a request body gives, by name (those left `UNSET` are not there): what an
    update (PATCH) changes."""
    return {
        name: value
        for name in data.__struct_fields__
        if (value := getattr(data, name)) is not msgspec.UNSET
    }


def decode_json(body: bytes, schema: type[T]) -> T:
    """A JSON body read by the controller itself (one that also takes CSV, say), refused as
    the framework refuses its own: `422` naming the field, `400` when it is not JSON."""
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc), field=field_of(str(exc), None)) from exc
    except msgspec.DecodeError as exc:
        raise ClientException(status_code=400, detail="The request body is not valid JSON") from exc


class Response(msgspec.Struct, kw_only=True):
    """Base of every response body."""


class Page(msgspec.Struct, Generic[T], kw_only=True):
    items: list[T]
    limit: int
    offset: int
    total: int


Limit = Annotated[
    int,
    Parameter(
        query="limit",
        ge=1,
        le=MAX_PAGE_SIZE,
        default=DEFAULT_PAGE_SIZE,
        description=f"Page size, at most {MAX_PAGE_SIZE}",
    ),
]
Offset = Annotated[int, Parameter(query="offset", ge=0, le=10_000_000, default=0)]
