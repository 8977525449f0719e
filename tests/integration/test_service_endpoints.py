"""Health probes, Prometheus metrics and the offline OpenAPI documentation."""

from __future__ import annotations

import re

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]


async def test_health_probes(client: Client) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_metrics_count_requests(client: Client) -> None:
    await client.get("/health/live")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert re.search(r'coalition_requests_total\{[^}]*path="/health/live"[^}]*\} \d', metrics.text)


async def test_openapi_is_3_1_and_lists_the_api(client: Client) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    assert "/api/v1/auth/login" in spec["paths"]
    assert "/api/v1/organizations/{org_id}" in spec["paths"]


async def test_docs_page_works_offline(client: Client) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
    assert assets, page.text[:500]
    for asset in assets:
        assert asset.startswith("/static/"), f"docs page loads {asset} from elsewhere"
        served = await client.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset
