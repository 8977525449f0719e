"""The simulator as an ASGI application: Stripe's `/v1` API and the `/_simulator` control API.

It speaks Stripe's wire protocol itself (form-encoded nested parameters, Bearer secret keys,
`Stripe-Account`, `Idempotency-Key`, Stripe's error bodies on every path), because it must also
misbehave on purpose: answer 500, answer late, or do the work and then reset the connection.

Stripe's idempotency semantics: a POST (or DELETE) with an `Idempotency-Key` stores the status
and body of its first execution, errors included, for 24 hours (of the simulator's clock); a
replay with the same parameters gets them back with `Idempotent-Replayed: true`; the same key with
other parameters is a 400 `idempotency_error`; the same key while the first is still running is a
409. Requests refused before execution (bad parameters, authentication, injected 500s) store
nothing, so their retry runs for real.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from coalition.settlement.simulator import connect, events, payments, routes
from coalition.settlement.simulator.calls import Call, add_balance_transaction
from coalition.settlement.simulator.forms import StripeError, canonical, decode_params
from coalition.settlement.simulator.store import (
    API_VERSION,
    Clock,
    IdempotencyRecord,
    IdFactory,
    Store,
    StripeObject,
)
from coalition.settlement.simulator.webhooks import WebhookDispatcher, WebhookFault

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
log = structlog.get_logger("coalition.stripe_simulator")
HANG_LIMIT_SECONDS = 300.0
FAULT_MODES = ("error", "delay", "drop", "hang")

Scope = dict[str, Any]
Receive = Any
Send = Any


@dataclass
class SimulatorConfig:
    seed: int | None = None
    api_keys: frozenset[str] | None = None  # None: any `sk_test_...` key is accepted
    state_file: Path | None = None
    charge_fee_bp: int = 0  # Stripe's processing fee on charges, in basis points ...
    charge_fee_fixed: int = 0  # ... plus a fixed part, in minor units
    webhook_retry_delays: list[float] = field(default_factory=lambda: [1.0, 5.0, 30.0])
    webhook_timeout: float = 10.0
    public_url: str | None = None  # the base of account-link URLs (default: the request's host)


@dataclass
class Fault:
    id: str
    mode: str
    method: str
    path: str  # a glob over the request path, e.g. /v1/transfers or /v1/transfers/*/reversals
    remaining: int
    status: int = 500
    delay_ms: int = 0
    after: bool = False  # "error" only: do the work first, then answer (and store) the error
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and self.method in ("*", method)
            and fnmatch.fnmatchcase(path, self.path)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mode": self.mode,
            "method": self.method,
            "path": self.path,
            "remaining": self.remaining,
            "status": self.status,
            "delay_ms": self.delay_ms,
            "after": self.after,
            "hits": self.hits,
        }


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]


class DropConnection(Exception):
    """Raised to reset the client's connection after the work was done."""


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status,
        json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8"),
        {"Content-Type": "application/json", **(headers or {})},
    )


class StripeSimulator:
    """ASGI app: `uvicorn.run(StripeSimulator(SimulatorConfig()), port=12111)`."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.faults: list[Fault] = []
        self._fault_ids = 0
        self.store = self._new_store()
        self.webhooks = WebhookDispatcher(
            self.store,
            retry_delays=list(self.config.webhook_retry_delays),
            timeout=self.config.webhook_timeout,
        )
        self.store.on_event = self.webhooks.on_event
        if self.config.state_file is not None and self.config.state_file.exists():
            self.store.restore(json.loads(self.config.state_file.read_text(encoding="utf-8")))

    def _new_store(self, seed: int | None = None) -> Store:
        ids = IdFactory(seed if seed is not None else self.config.seed)
        store = Store(ids=ids, clock=Clock(), platform_id="")
        store.platform_id = ids.new("acct", 16)
        store.state_file = self.config.state_file
        return store

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"].upper()
        path = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        host = headers.get("host", "127.0.0.1")
        base_url = self.config.public_url or f"{scope.get('scheme', 'http')}://{host}"
        try:
            if path.startswith("/_simulator/"):
                response = await self._control(method, path, query, body, base_url)
            else:
                response = await self._api(method, path, query, body, headers, base_url, receive)
        except DropConnection:
            # Start an answer promising a body, send half of nothing, and fail: the server closes
            # the connection and the client sees it reset mid-response.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            raise
        headers_out = {k.lower(): v for k, v in response.headers.items()}
        headers_out["content-length"] = str(len(response.body))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers_out.items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.webhooks.close()
                self.store.save()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ the Stripe API

    async def _api(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        headers: dict[str, str],
        base_url: str,
        receive: Receive,
    ) -> Response:
        store = self.store
        request_id = store.ids.new("req", 14)
        common = {
            "Request-Id": request_id,
            "Stripe-Version": headers.get("stripe-version", API_VERSION),
        }
        key = headers.get("idempotency-key") if method in ("POST", "DELETE") else None
        if key is not None:
            common["Idempotency-Key"] = key
        try:
            api_key = self._authenticate(headers)
            account = self._acting_account(headers, api_key)
            raw = query if method in ("GET", "DELETE") else body.decode("utf-8")
            params = decode_params(raw)
        except StripeError as exc:
            return _json(exc.status, exc.body(), {**common, **exc.headers})

        record_key = f"{api_key}|{account}|{key}" if key is not None else None
        fingerprint = f"{method} {path} {canonical(params)}"
        if record_key is not None:
            self._prune_idempotency()
            existing = store.idempotency.get(record_key)
            if existing is not None:
                return self._replay(existing, fingerprint, key or "", common)
            store.idempotency[record_key] = IdempotencyRecord(fingerprint, created=store.now())

        fault = next((f for f in self.faults if f.matches(method, path)), None)
        if fault is not None:
            fault.remaining -= 1
            fault.hits += 1
        try:
            if fault is not None and fault.mode == "delay":
                await asyncio.sleep(fault.delay_ms / 1000)
            if fault is not None and fault.mode == "error" and not fault.after:
                raise self._injected_error(fault, stored=False)
            response = self._execute(method, path, params, account, request_id, key, base_url)
            if fault is not None and fault.mode == "error" and fault.after:
                raise self._injected_error(fault, stored=True)
        except Exception as exc:  # every failure answers in Stripe's shape, never a bare 500
            if not isinstance(exc, StripeError):
                log.exception("simulator handler failed", method=method, path=path)
                exc = StripeError(500, f"Simulator error: {exc!r}", type="api_error", stored=False)
            response = _json(exc.status, exc.body(), dict(exc.headers))
            if record_key is not None and not exc.stored:
                store.idempotency.pop(record_key, None)
                record_key = None
        response.headers.update(common)
        if record_key is not None:
            record = store.idempotency[record_key]
            record.status, record.body, record.in_flight = response.status, response.body, False
            record.headers = dict(response.headers)
        if method != "GET":
            store.save()
        if fault is not None and fault.mode == "drop":
            raise DropConnection
        if fault is not None and fault.mode == "hang":
            await self._hang(receive)
            raise DropConnection
        return response

    def _execute(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        account: str,
        request_id: str,
        key: str | None,
        base_url: str,
    ) -> Response:
        handler, args = routes.route(method, path)
        expand = params.pop("expand", None) or []
        if not isinstance(expand, list):
            expand = [expand]
        call = Call(
            store=self.store,
            account=account,
            params=params,
            request_id=request_id,
            idempotency_key=key,
            base_url=base_url,
            fee_bp=self.config.charge_fee_bp,
            fee_fixed=self.config.charge_fee_fixed,
        )
        result = copy.deepcopy(handler(call, *args))
        for dotted in expand:
            self._expand(result, str(dotted).split("."), account)
        return _json(200, result)

    def _expand(self, node: Any, parts: list[str], account: str) -> None:
        if not parts:
            return
        head, rest = parts[0], parts[1:]
        if isinstance(node, list):
            for item in node:
                self._expand(item, parts, account)
            return
        if not isinstance(node, dict) or head not in node:
            return
        value = node[head]
        if isinstance(value, str) and value in self.store.objects:
            node[head] = copy.deepcopy(self.store.objects[value])
            if node[head].get("object") == "webhook_endpoint":
                node[head].pop("secret", None)
        self._expand(node[head], rest, account)

    def _authenticate(self, headers: dict[str, str]) -> str:
        authorization = headers.get("authorization", "")
        key = ""
        if authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        elif authorization.lower().startswith("basic "):
            import base64

            try:
                key = base64.b64decode(authorization[6:]).decode().split(":", 1)[0]
            except ValueError:
                key = ""
        if not key:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                stored=False,
            )
        allowed = self.config.api_keys
        if not key.startswith("sk_test_") or (allowed is not None and key not in allowed):
            raise StripeError(
                401, f"Invalid API Key provided: {key[:8]}{'*' * 8}{key[-4:]}", stored=False
            )
        return key

    def _acting_account(self, headers: dict[str, str], api_key: str) -> str:
        requested = headers.get("stripe-account")
        if not requested or requested == self.store.platform_id:
            return self.store.platform_id
        account = self.store.find(requested, self.store.platform_id)
        if account is None or account.get("object") != "account":
            raise StripeError(
                403,
                f"The provided key '{api_key[:8]}{'*' * 8}{api_key[-4:]}' does not have access to "
                f"account '{requested}' (or that account does not exist). Application access may "
                "have been revoked.",
                code="account_invalid",
                stored=False,
            )
        return requested

    def _replay(
        self, record: IdempotencyRecord, fingerprint: str, key: str, common: dict[str, str]
    ) -> Response:
        if record.fingerprint != fingerprint:
            error = StripeError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were "
                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                "different request.",
                type="idempotency_error",
                stored=False,
            )
            return _json(400, error.body(), common)
        if record.in_flight:
            error = StripeError(
                409,
                "There is currently another in-progress request using this Stripe API key and "
                "idempotency key. Please try again later.",
                type="idempotency_error",
                code="idempotency_key_in_use",
                stored=False,
            )
            return _json(409, error.body(), common)
        headers = dict(record.headers)
        headers["Original-Request"] = headers.get("Request-Id", "")
        headers["Request-Id"] = common["Request-Id"]
        headers["Idempotent-Replayed"] = "true"
        return Response(record.status, record.body, headers)

    def _prune_idempotency(self) -> None:
        cutoff = self.store.now() - IDEMPOTENCY_TTL_SECONDS
        for record_key, record in list(self.store.idempotency.items()):
            if record.created < cutoff and not record.in_flight:
                del self.store.idempotency[record_key]

    @staticmethod
    def _injected_error(fault: Fault, *, stored: bool) -> StripeError:
        return StripeError(
            fault.status,
            "An unknown error occurred",
            type="api_error",
            stored=stored,
        )

    async def _hang(self, receive: Receive) -> None:
        """Never answer: wait for the client to give up (or the hang limit)."""
        try:
            async with asyncio.timeout(HANG_LIMIT_SECONDS):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
        except TimeoutError:
            return

    # ------------------------------------------------------------------ the control API

    async def _control(
        self, method: str, path: str, query: str, body: bytes, base_url: str
    ) -> Response:
        try:
            payload: dict[str, Any] = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            return _json(400, {"error": f"malformed JSON: {exc}"})
        try:
            return await self._control_route(method, path, query, payload, base_url)
        except StripeError as exc:
            return _json(exc.status, exc.body())
        except (KeyError, TypeError, ValueError) as exc:
            return _json(400, {"error": f"bad control request: {exc!r}"})

    async def _control_route(
        self, method: str, path: str, query: str, payload: dict[str, Any], base_url: str
    ) -> Response:
        store = self.store
        platform = Call(store, store.platform_id, {}, "req_simulator", None, base_url)
        match = re.fullmatch(r"/_simulator/([a-z_]+)(?:/([A-Za-z0-9_]+))?(?:/([a-z_]+))?", path)
        if match is None:
            return _json(404, {"error": f"no control endpoint {method} {path}"})
        area, object_id, action = match.groups()

        if area == "health" and method == "GET":
            return _json(200, {"ok": True, "platform_account": store.platform_id})
        if area == "reset" and method == "POST":
            await self.webhooks.close()
            self.faults.clear()
            self.store = self._new_store(payload.get("seed"))
            self.webhooks = WebhookDispatcher(
                self.store,
                retry_delays=list(self.config.webhook_retry_delays),
                timeout=self.config.webhook_timeout,
            )
            self.store.on_event = self.webhooks.on_event
            self.store.save()
            return _json(200, {"platform_account": self.store.platform_id})
        if area == "state" and method == "GET":
            return _json(200, store.snapshot())
        if area == "faults":
            return self._control_faults(method, object_id, payload)
        if area == "clock":
            if method == "POST":
                if "advance" in payload:
                    if store.clock.frozen is not None:
                        store.clock.frozen += int(payload["advance"])
                    else:
                        store.clock.offset += int(payload["advance"])
                if "now" in payload:
                    store.clock.frozen = int(payload["now"])
                if payload.get("freeze") is False:
                    store.clock.frozen = None
                elif payload.get("freeze") is True and store.clock.frozen is None:
                    store.clock.frozen = store.now()
            return _json(200, {"now": store.now(), "frozen": store.clock.frozen is not None})
        if area == "idempotency" and object_id == "expire" and method == "POST":
            count = len(store.idempotency)
            store.idempotency.clear()
            return _json(200, {"forgotten": count})
        if area == "balance" and object_id == "topup" and method == "POST":
            return _json(200, self._topup(platform, payload))
        if area == "onboarding" and object_id and method == "GET":
            return self._onboarding_page(object_id)
        if area == "accounts" and object_id and action == "onboarding" and method == "POST":
            account = connect.complete_onboarding(store, object_id, **payload)
            store.save()
            return _json(200, account)
        if area == "accounts" and object_id and action == "payouts" and method == "POST":
            call = Call(store, self._account(object_id), {}, "req_simulator", None, base_url)
            payout = connect.automatic_payout(call, str(payload["currency"]).lower())
            store.save()
            return _json(200, payout)
        if area == "payment_intents" and object_id and action == "settle" and method == "POST":
            call = Call(
                store,
                self._account(payload.get("account")),
                {},
                "req_simulator",
                None,
                base_url,
                self.config.charge_fee_bp,
                self.config.charge_fee_fixed,
            )
            intent = payments.settle_debit(call, object_id, payload.get("outcome"))
            store.save()
            return _json(200, intent)
        if area == "transfers" and object_id:
            return self._control_transfer(method, object_id, action, payload, query)
        if area == "webhooks":
            return await self._control_webhooks(method, object_id, payload)
        if area == "events" and object_id and action == "redeliver" and method == "POST":
            event = store.objects.get(object_id)
            if event is None or event.get("object") != "event":
                return _json(404, {"error": f"no event {object_id}"})
            return _json(200, {"scheduled": self.webhooks.redeliver(event)})
        if area == "save" and method == "POST":
            store.save()
            return _json(200, {"saved": store.state_file is not None})
        return _json(404, {"error": f"no control endpoint {method} {path}"})

    def _account(self, account_id: str | None) -> str:
        if not account_id or account_id == self.store.platform_id:
            return self.store.platform_id
        account = self.store.find(account_id, self.store.platform_id)
        if account is None or account.get("object") != "account":
            raise StripeError(404, f"No such account: '{account_id}'", code="resource_missing")
        return account_id

    def _control_faults(
        self, method: str, fault_id: str | None, payload: dict[str, Any]
    ) -> Response:
        if method == "GET":
            return _json(200, {"data": [fault.as_json() for fault in self.faults]})
        if method == "DELETE":
            before = len(self.faults)
            self.faults = [f for f in self.faults if fault_id is not None and f.id != fault_id]
            return _json(200, {"deleted": before - len(self.faults)})
        mode = str(payload.get("mode", "error"))
        if mode not in FAULT_MODES:
            return _json(400, {"error": f"mode must be one of {', '.join(FAULT_MODES)}"})
        self._fault_ids += 1
        fault = Fault(
            id=f"fault_{self._fault_ids}",
            mode=mode,
            method=str(payload.get("method", "*")).upper(),
            path=str(payload["path"]),
            remaining=int(payload.get("count", 1)),
            status=int(payload.get("status", 500)),
            delay_ms=int(payload.get("delay_ms", 0)),
            after=bool(payload.get("after", False)),
        )
        self.faults.append(fault)
        return _json(200, fault.as_json())

    def _topup(self, call: Call, payload: dict[str, Any]) -> StripeObject:
        account = self._account(payload.get("account"))
        amount = int(payload["amount"])
        code = str(payload.get("currency", "usd")).lower()
        topup_id = self.store.new_id("tu")
        txn = add_balance_transaction(
            call,
            account,
            amount=amount,
            currency_code=code,
            kind="topup",
            source=topup_id,
            category="topup",
            description="simulator top-up",
        )
        topup = {
            "id": topup_id,
            "object": "topup",
            "amount": amount,
            "balance_transaction": txn["id"],
            "created": self.store.now(),
            "currency": code,
            "livemode": False,
            "metadata": {},
            "status": "succeeded",
        }
        self.store.add(topup, account)
        self.store.save()
        return topup

    def _onboarding_page(self, token: str) -> Response:
        store = self.store
        link = store.objects.get(token)
        details = store.hidden.get(token, {})
        if link is None or link.get("object") != "simulator.onboarding_link":
            return Response(404, b"unknown onboarding link", {"Content-Type": "text/plain"})
        if store.now() > details["expires_at"] or details.get("used"):
            target = details.get("refresh_url")
            if target:
                return Response(302, b"", {"Location": target})
            return Response(
                410, b"this onboarding link has expired", {"Content-Type": "text/plain"}
            )
        details["used"] = True
        connect.complete_onboarding(store, details["account"])
        store.save()
        target = details.get("return_url")
        if target:
            return Response(302, b"", {"Location": target})
        return Response(
            200,
            f"Onboarding of {details['account']} is complete.".encode(),
            {"Content-Type": "text/plain; charset=utf-8"},
        )

    def _control_transfer(
        self,
        method: str,
        transfer_id: str,
        action: str | None,
        payload: dict[str, Any],
        query: str,
    ) -> Response:
        store = self.store
        transfer = store.find(transfer_id, store.platform_id)
        if transfer is None or transfer.get("object") != "transfer":
            return _json(404, {"error": f"no transfer {transfer_id}"})
        txn = store.objects.get(transfer["balance_transaction"] or "")
        if method == "POST" and action == "alter":
            include_txn = bool(payload.get("balance_transaction", True))
            if "amount" in payload:
                transfer["amount"] = int(payload["amount"])
                if include_txn and txn is not None:
                    txn.update(amount=-transfer["amount"], net=-transfer["amount"] + txn["fee"])
            if "currency" in payload:
                transfer["currency"] = str(payload["currency"]).lower()
                if include_txn and txn is not None:
                    txn["currency"] = transfer["currency"]
            if "metadata" in payload:
                transfer["metadata"] = {str(k): str(v) for k, v in payload["metadata"].items()}
            store.save()
            return _json(200, transfer)
        if method == "DELETE" and action is None:
            keep_txn = "balance_transaction=keep" in query
            store.remove(transfer_id)
            if txn is not None and not keep_txn:
                store.remove(txn["id"])
            store.save()
            return _json(200, {"id": transfer_id, "deleted": True})
        return _json(404, {"error": f"no control endpoint {method} transfers/{action}"})

    async def _control_webhooks(
        self, method: str, what: str | None, payload: dict[str, Any]
    ) -> Response:
        dispatcher = self.webhooks
        if what == "faults" and method == "POST":
            mode = str(payload.get("mode", "drop"))
            if mode not in ("drop", "duplicate"):
                return _json(400, {"error": "mode must be drop or duplicate"})
            fault = WebhookFault(mode, int(payload.get("count", 1)), payload.get("event_type"))
            dispatcher.faults.append(fault)
            return _json(200, {"mode": fault.mode, "remaining": fault.remaining})
        if what == "faults" and method == "DELETE":
            dispatcher.faults.clear()
            return _json(200, {"deleted": True})
        if what == "flush" and method == "POST":
            done = await dispatcher.flush(float(payload.get("timeout", 30)))
            return _json(
                200 if done else 504,
                {"done": done, "deliveries": [d.as_json() for d in dispatcher.deliveries]},
            )
        if what == "deliveries" and method == "GET":
            return _json(200, {"data": [d.as_json() for d in dispatcher.deliveries]})
        if what == "endpoints" and method == "POST":
            # Register an endpoint with a known secret (`coalition dev` wires its receiver so).
            call = Call(
                self.store,
                self.store.platform_id,
                {
                    "url": str(payload["url"]),
                    "enabled_events": list(payload.get("enabled_events", ["*"])),
                    "connect": "true" if payload.get("connect") else "false",
                },
                "req_simulator",
                None,
                "",
            )
            endpoint = events.create_webhook_endpoint(call)
            if payload.get("secret"):
                endpoint["secret"] = str(payload["secret"])
            self.store.save()
            return _json(200, endpoint)
        return _json(404, {"error": f"no control endpoint {method} webhooks/{what}"})
