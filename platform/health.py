"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from coalition.platform.db import ping


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    include_in_schema = False

    @get("/live", opt={"exclude_from_auth": True})
    async def live(self) -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get("/ready", opt={"exclude_from_auth": True})
    async def ready(self, state: State) -> Response[dict[str, Any]]:
        """PostgreSQL and Redis both answer."""
        checks: dict[str, str] = {}
        try:
            await ping(state.engine)
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"error: {type(exc).__name__}"
        try:
            await state.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return Response(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE,
        )
