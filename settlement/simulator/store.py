"""The simulator's state: every object by id, owned by one account, plus clock, ids and events.

All of it lives in memory (optionally saved to a JSON file after each change). Objects are plain
dicts in Stripe's JSON shape; what Stripe does not show (which payout swept a balance transaction,
how a test card behaves) is kept beside them, never inside.
"""

from __future__ import annotations

import copy
import json
import random
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coalition.settlement.simulator.forms import Params, StripeError, parameter_error

API_VERSION = "2026-10-28.endive"
_ALPHABET = string.ascii_letters + string.digits
MAX_LIMIT = 100
DEFAULT_LIMIT = 10

StripeObject = dict[str, Any]


class IdFactory:
    """Stripe-looking ids (`tr_` + 24 base62 characters); deterministic when seeded."""

    def __init__(self, seed: int | None = None) -> None:
        self._random: random.Random = (
            random.Random(seed) if seed is not None else random.SystemRandom()
        )

    def new(self, prefix: str, length: int = 24) -> str:
        return prefix + "_" + "".join(self._random.choice(_ALPHABET) for _ in range(length))

    def state(self) -> Any:
        return self._random.getstate() if type(self._random) is random.Random else None

    def restore(self, saved: Any) -> None:
        if saved is not None and type(self._random) is random.Random:
            self._random.setstate(_tuples(saved))


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


@dataclass
class Clock:
    """Wall-clock seconds, shifted by `offset`, or frozen at `frozen`."""

    offset: int = 0
    frozen: int | None = None

    def now(self) -> int:
        return self.frozen if self.frozen is not None else int(time.time()) + self.offset


@dataclass
class IdempotencyRecord:
    fingerprint: str
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    created: int = 0
    in_flight: bool = True


@dataclass
class Store:
    """Objects, their owners and creation order, and what the simulator knows beside them."""

    ids: IdFactory
    clock: Clock
    platform_id: str
    objects: dict[str, StripeObject] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # object id -> account id
    order: dict[str, int] = field(default_factory=dict)  # object id -> creation sequence
    hidden: dict[str, dict[str, Any]] = field(default_factory=dict)  # not shown by Stripe
    idempotency: dict[str, IdempotencyRecord] = field(default_factory=dict)
    on_event: Callable[[StripeObject], None] | None = None
    state_file: Path | None = None
    _sequence: int = 0

    # ------------------------------------------------------------------ objects

    def add(self, obj: StripeObject, account: str, /, **hidden: Any) -> StripeObject:
        self._sequence += 1
        self.objects[obj["id"]] = obj
        self.owner[obj["id"]] = account
        self.order[obj["id"]] = self._sequence
        if hidden:
            self.hidden[obj["id"]] = hidden
        return obj

    def get(
        self, object_id: str, account: str, kind: str, label: str | None = None
    ) -> StripeObject:
        obj = self.objects.get(object_id)
        if obj is None or obj.get("object") != kind or self.owner.get(object_id) != account:
            raise StripeError(
                404,
                f"No such {label or kind.replace('_', ' ')}: '{object_id}'",
                code="resource_missing",
                param="id",
            )
        return obj

    def find(self, object_id: str, account: str) -> StripeObject | None:
        obj = self.objects.get(object_id)
        if obj is None or self.owner.get(object_id) != account:
            return None
        return obj

    def remove(self, object_id: str) -> None:
        self.objects.pop(object_id, None)
        self.owner.pop(object_id, None)
        self.order.pop(object_id, None)
        self.hidden.pop(object_id, None)

    def of_kind(self, kind: str, account: str) -> list[StripeObject]:
        """The account's objects of one kind, newest first (Stripe's list order)."""
        found = [
            obj
            for object_id, obj in self.objects.items()
            if obj.get("object") == kind and self.owner.get(object_id) == account
        ]
        found.sort(key=lambda obj: (obj.get("created", 0), self.order[obj["id"]]), reverse=True)
        return found

    def new_id(self, prefix: str) -> str:
        while True:
            candidate = self.ids.new(prefix)
            if candidate not in self.objects:
                return candidate

    def now(self) -> int:
        return self.clock.now()

    # ------------------------------------------------------------------ events

    def emit(
        self,
        event_type: str,
        obj: StripeObject,
        account: str,
        *,
        previous: dict[str, Any] | None = None,
        request: tuple[str | None, str | None] = (None, None),
    ) -> StripeObject:
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event: StripeObject = {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": request[0], "idempotency_key": request[1]},
            "type": event_type,
        }
        if account != self.platform_id:
            event["account"] = account
        self.add(event, account)
        if self.on_event is not None:
            self.on_event(event)
        return event

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        return {
            "platform_id": self.platform_id,
            "clock": {"offset": self.clock.offset, "frozen": self.clock.frozen},
            "sequence": self._sequence,
            "ids": self.ids.state(),
            "objects": [
                {
                    "object": self.objects[object_id],
                    "account": self.owner[object_id],
                    "order": self.order[object_id],
                    "hidden": self.hidden.get(object_id, {}),
                }
                for object_id in sorted(self.objects, key=lambda i: self.order[i])
            ],
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.platform_id = saved["platform_id"]
        self.clock.offset = saved["clock"]["offset"]
        self.clock.frozen = saved["clock"]["frozen"]
        self._sequence = saved["sequence"]
        self.ids.restore(saved.get("ids"))
        for entry in saved["objects"]:
            object_id = entry["object"]["id"]
            self.objects[object_id] = entry["object"]
            self.owner[object_id] = entry["account"]
            self.order[object_id] = entry["order"]
            if entry["hidden"]:
                self.hidden[object_id] = entry["hidden"]

    def save(self) -> None:
        if self.state_file is None:
            return
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        temporary.replace(self.state_file)


# ---------------------------------------------------------------------- parameters


def require(params: Params, name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise parameter_error(f"Missing required param: {name}.", name, "parameter_missing")
    return value


def only(params: Params, allowed: Iterable[str]) -> None:
    permitted = set(allowed) | {"expand"}
    for name in params:
        if name not in permitted:
            raise parameter_error(f"Received unknown parameter: {name}", name, "parameter_unknown")


def integer(params: Params, name: str, *, minimum: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(str(raw))
    except ValueError:
        raise parameter_error(
            f"Invalid integer: {raw}", name, "parameter_invalid_integer"
        ) from None
    if minimum is not None and value < minimum:
        raise parameter_error(
            f"This value must be greater than or equal to {minimum}.",
            name,
            "parameter_invalid_integer",
        )
    return value


def boolean(params: Params, name: str, default: bool = False) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw in ("true", True):
        return True
    if raw in ("false", False):
        return False
    raise parameter_error(f"Invalid boolean: {raw}", name)


def currency(params: Params, name: str = "currency") -> str:
    value = str(require(params, name)).lower()
    if len(value) != 3 or not value.isalpha():
        raise parameter_error(f"Invalid currency: {value}.", name, "parameter_invalid_string")
    return value


def metadata(params: Params, existing: dict[str, str] | None = None) -> dict[str, str]:
    """Stripe's metadata update rules: keys merge, an empty value deletes, `metadata=''` clears."""
    raw = params.get("metadata")
    result = dict(existing or {})
    if raw is None:
        return result
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise parameter_error("Invalid object", "metadata")
    for key, value in raw.items():
        if len(key) > 40:
            raise parameter_error("Metadata keys can have up to 40 characters.", f"metadata[{key}]")
        if not isinstance(value, str):
            raise parameter_error("Invalid metadata value", f"metadata[{key}]")
        if len(value) > 500:
            raise parameter_error(
                "Metadata values can have up to 500 characters.", f"metadata[{key}]"
            )
        if value == "":
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > 50:
        raise parameter_error("Metadata can have up to 50 keys.", "metadata")
    return result


def created_filter(params: Params, name: str = "created") -> Callable[[int], bool]:
    raw = params.get(name)
    if raw is None or raw == "":
        return lambda _value: True
    if isinstance(raw, dict):
        bounds: dict[str, int] = {}
        for op, text in raw.items():
            if op not in ("gt", "gte", "lt", "lte"):
                raise parameter_error(
                    f"Received unknown parameter: {name}[{op}]",
                    f"{name}[{op}]",
                    "parameter_unknown",
                )
            parsed = integer({op: text}, op)
            assert parsed is not None
            bounds[op] = parsed

        def within(value: int) -> bool:
            return (
                ("gt" not in bounds or value > bounds["gt"])
                and ("gte" not in bounds or value >= bounds["gte"])
                and ("lt" not in bounds or value < bounds["lt"])
                and ("lte" not in bounds or value <= bounds["lte"])
            )

        return within
    exact = integer(params, name)
    return lambda value: value == exact


def paginate(store: Store, items: list[StripeObject], params: Params, url: str) -> StripeObject:
    """A Stripe list object over `items` (already newest first), honouring the cursors."""
    limit = integer(params, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise parameter_error(
            f"This value must be between 1 and {MAX_LIMIT}.", "limit", "parameter_invalid_integer"
        )
    starting_after = params.get("starting_after")
    ending_before = params.get("ending_before")
    if starting_after and ending_before:
        raise parameter_error(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "starting_after",
        )

    def key(obj: StripeObject) -> tuple[int, int]:
        return (obj.get("created", 0), store.order[obj["id"]])

    if starting_after:
        cursor = _cursor(store, str(starting_after), "starting_after")
        older = [obj for obj in items if key(obj) < cursor]
        page, has_more = older[:limit], len(older) > limit
    elif ending_before:
        cursor = _cursor(store, str(ending_before), "ending_before")
        newer = [obj for obj in items if key(obj) > cursor]
        page, has_more = newer[-limit:], len(newer) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    return {"object": "list", "data": page, "has_more": has_more, "url": url}


def _cursor(store: Store, object_id: str, name: str) -> tuple[int, int]:
    obj = store.objects.get(object_id)
    if obj is None:
        raise StripeError(
            404, f"No such object: '{object_id}'", code="resource_missing", param=name, stored=False
        )
    return (obj.get("created", 0), store.order[object_id])
