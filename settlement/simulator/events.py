"""Events and webhook endpoints."""

from __future__ import annotations

import re

from coalition.settlement.simulator.calls import (
    Call,
    platform_only,
)
from coalition.settlement.simulator.forms import parameter_error
from coalition.settlement.simulator.store import (
    StripeObject,
    boolean,
    created_filter,
    metadata,
    only,
    paginate,
    require,
)

# ---------------------------------------------------------------------- events


def list_events(call: Call) -> StripeObject:
    params = call.params
    only(
        params,
        (
            "type",
            "types",
            "created",
            "delivery_success",
            "limit",
            "starting_after",
            "ending_before",
        ),
    )
    within = created_filter(params)
    patterns: list[str] = []
    if params.get("type"):
        patterns.append(str(params["type"]))
    if params.get("types"):
        if not isinstance(params["types"], list):
            raise parameter_error("Invalid array", "types")
        if params.get("type"):
            raise parameter_error(
                "You may only specify one of these parameters: type, types.", "types"
            )
        patterns.extend(str(item) for item in params["types"])
    items = [
        event
        for event in call.store.of_kind("event", call.account)
        if within(event["created"])
        and (not patterns or any(event_matches(p, event["type"]) for p in patterns))
    ]
    return paginate(call.store, items, params, "/v1/events")


def event_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def retrieve_event(call: Call, event_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(event_id, call.account, "event")


# ---------------------------------------------------------------------- webhook endpoints


def create_webhook_endpoint(call: Call) -> StripeObject:
    params = call.params
    only(params, ("url", "enabled_events", "connect", "description", "metadata", "api_version"))
    platform_only(call, "Webhook endpoints")
    url = str(require(params, "url"))
    if not re.match(r"^https?://", url):
        raise parameter_error("Invalid URL: must be an http or https URL.", "url", "url_invalid")
    events = require(params, "enabled_events")
    if not isinstance(events, list) or not events:
        raise parameter_error("Invalid array", "enabled_events")
    store = call.store
    endpoint: StripeObject = {
        "id": store.new_id("we"),
        "object": "webhook_endpoint",
        "api_version": params.get("api_version"),
        "application": None,
        "created": store.now(),
        "description": params.get("description"),
        "enabled_events": [str(item) for item in events],
        "livemode": False,
        "metadata": metadata(params),
        "secret": store.ids.new("whsec", 32),
        "status": "enabled",
        "url": url,
    }
    store.add(endpoint, store.platform_id, connect=boolean(params, "connect"))
    return endpoint


def _public_endpoint(endpoint: StripeObject) -> StripeObject:
    # The secret is shown only when the endpoint is created.
    return {key: value for key, value in endpoint.items() if key != "secret"}


def retrieve_webhook_endpoint(call: Call, endpoint_id: str) -> StripeObject:
    only(call.params, ())
    platform_only(call, "Webhook endpoints")
    return _public_endpoint(call.store.get(endpoint_id, call.account, "webhook_endpoint"))


def update_webhook_endpoint(call: Call, endpoint_id: str) -> StripeObject:
    only(call.params, ("url", "enabled_events", "disabled", "description", "metadata"))
    platform_only(call, "Webhook endpoints")
    endpoint = call.store.get(endpoint_id, call.account, "webhook_endpoint")
    if call.params.get("url"):
        endpoint["url"] = str(call.params["url"])
    if isinstance(call.params.get("enabled_events"), list):
        endpoint["enabled_events"] = [str(item) for item in call.params["enabled_events"]]
    if "disabled" in call.params:
        endpoint["status"] = "disabled" if boolean(call.params, "disabled") else "enabled"
    endpoint["metadata"] = metadata(call.params, endpoint["metadata"])
    return _public_endpoint(endpoint)


def delete_webhook_endpoint(call: Call, endpoint_id: str) -> StripeObject:
    only(call.params, ())
    platform_only(call, "Webhook endpoints")
    call.store.get(endpoint_id, call.account, "webhook_endpoint")
    call.store.remove(endpoint_id)
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


def list_webhook_endpoints(call: Call) -> StripeObject:
    only(call.params, ("limit", "starting_after", "ending_before"))
    platform_only(call, "Webhook endpoints")
    items = [_public_endpoint(e) for e in call.store.of_kind("webhook_endpoint", call.account)]
    return paginate(call.store, items, call.params, "/v1/webhook_endpoints")
