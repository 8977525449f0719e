"""Stripe's wire format: form-encoded nested parameters in, error bodies out.

The SDK sends `metadata[statement]=s1`, `expand[0]=balance_transaction` (arrays are indexed),
`created[gte]=1700000000` and booleans as `true` / `false`, in the body of a POST and in the query
string of a GET. `decode_params` turns that back into nested dicts and lists.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

Params = dict[str, Any]

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


class StripeError(Exception):
    """An error answered in Stripe's shape: `{"error": {"type", "code", "message", "param"}}`.

    `stored` says whether the idempotency layer saves it: Stripe saves a response once the
    endpoint began executing, but not for requests refused while their parameters are checked.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        stored: bool = True,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.stored = stored
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        }
        error.update(self.extra)
        return {"error": error}


def parameter_error(message: str, param: str, code: str = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code=code, param=param, stored=False)


def resource_missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def decode_params(encoded: str) -> Params:
    """Nested dicts and lists from `a[b][c]=v&l[0]=x&l[]=y` (blank values kept as '')."""
    result: Params = {}
    for raw_key, value in parse_qsl(encoded, keep_blank_values=True):
        match = _KEY.match(raw_key)
        if match is None:
            raise parameter_error(f"Invalid parameter name: {raw_key}", raw_key)
        head, rest = match.group(1), match.group(2)
        parts = [head, *re.findall(r"\[([^\[\]]*)\]", rest)]
        _assign(result, parts, value, raw_key)
    decoded: Params = _lists(result)
    return decoded


def _assign(target: Params, parts: list[str], value: str, raw_key: str) -> None:
    node = target
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "":
            # `l[]=x`: append; stored under increasing synthetic indexes.
            part = f"{len(node):d}"
            while part in node:
                part = f"{int(part) + 1:d}"
        if last:
            node[part] = value
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise parameter_error(f"Invalid parameter structure: {raw_key}", raw_key)
        node = child


def _lists(node: Any, key: str = "") -> Any:
    """Dicts whose keys are all integers become lists in index order (never `metadata`)."""
    if not isinstance(node, dict):
        return node
    converted = {name: _lists(value, name) for name, value in node.items()}
    if key != "metadata" and converted and all(name.isdigit() for name in converted):
        return [converted[name] for name in sorted(converted, key=int)]
    return converted


def canonical(params: Params) -> str:
    """A stable text of the parameters, to compare a replay with the first request."""
    import json

    return json.dumps(params, sort_keys=True, separators=(",", ":"))
