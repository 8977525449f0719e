"""A client for the simulator's `/_simulator` control API (tests, `coalition dev`, tools)."""

from __future__ import annotations

from typing import Any

import httpx


class SimulatorControlError(RuntimeError):
    pass


class SimulatorControl:
    """`async with SimulatorControl(url) as control: await control.top_up(10_000, "cny")`."""

    def __init__(self, base_url: str, *, timeout: float = 60.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    async def __aenter__(self) -> SimulatorControl:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, **params: str
    ) -> Any:
        response = await self._client.request(
            method, f"/_simulator/{path}", json=body, params=params or None
        )
        if response.status_code >= 400:
            raise SimulatorControlError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    async def reset(self, seed: int | None = None) -> str:
        """Forget everything (a fresh platform account; deterministic ids with a seed)."""
        answer = await self._call("POST", "reset", {"seed": seed})
        return str(answer["platform_account"])

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "health")
        return result

    async def top_up(self, amount: int, currency: str, account: str | None = None) -> str:
        """Add available balance (a `topup` balance transaction) to the platform or an account."""
        body: dict[str, Any] = {"amount": amount, "currency": currency}
        if account:
            body["account"] = account
        topup = await self._call("POST", "balance/topup", body)
        return str(topup["id"])

    async def complete_onboarding(self, account_id: str, **flags: Any) -> dict[str, Any]:
        """Finish hosted onboarding, or set `charges_enabled`, `payouts_enabled`, ... directly."""
        result: dict[str, Any] = await self._call(
            "POST", f"accounts/{account_id}/onboarding", flags
        )
        return result

    async def automatic_payout(self, account_id: str, currency: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"accounts/{account_id}/payouts", {"currency": currency}
        )
        return result

    async def settle_payment_intent(
        self, intent_id: str, outcome: str | None = None, account: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if outcome:
            body["outcome"] = outcome
        if account:
            body["account"] = account
        result: dict[str, Any] = await self._call(
            "POST", f"payment_intents/{intent_id}/settle", body
        )
        return result

    async def add_fault(
        self,
        path: str,
        *,
        mode: str = "error",
        method: str = "*",
        count: int = 1,
        status: int = 500,
        delay_ms: int = 0,
        after: bool = False,
    ) -> dict[str, Any]:
        """Make the next `count` calls matching `method` and the path glob misbehave."""
        result: dict[str, Any] = await self._call(
            "POST",
            "faults",
            {
                "path": path,
                "mode": mode,
                "method": method,
                "count": count,
                "status": status,
                "delay_ms": delay_ms,
                "after": after,
            },
        )
        return result

    async def faults(self) -> list[dict[str, Any]]:
        answer = await self._call("GET", "faults")
        return list(answer["data"])

    async def clear_faults(self) -> None:
        await self._call("DELETE", "faults")

    async def alter_transfer(self, transfer_id: str, **changes: Any) -> dict[str, Any]:
        """Change a stored transfer's `amount`, `currency` or `metadata` behind our back."""
        result: dict[str, Any] = await self._call("POST", f"transfers/{transfer_id}/alter", changes)
        return result

    async def delete_transfer(
        self, transfer_id: str, *, keep_balance_transaction: bool = False
    ) -> None:
        params = {"balance_transaction": "keep"} if keep_balance_transaction else {}
        await self._call("DELETE", f"transfers/{transfer_id}", None, **params)

    async def webhook_fault(self, mode: str, count: int = 1, event_type: str | None = None) -> None:
        """`drop` (never deliver) or `duplicate` (deliver twice) the next matching deliveries."""
        await self._call(
            "POST", "webhooks/faults", {"mode": mode, "count": count, "event_type": event_type}
        )

    async def register_webhook_endpoint(
        self,
        url: str,
        *,
        secret: str | None = None,
        connect: bool = False,
        enabled_events: list[str] | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST",
            "webhooks/endpoints",
            {
                "url": url,
                "secret": secret,
                "connect": connect,
                "enabled_events": enabled_events or ["*"],
            },
        )
        return result

    async def flush_webhooks(self, within: float = 30.0) -> list[dict[str, Any]]:
        """Wait for every delivery in progress; the whole delivery log."""
        answer = await self._call("POST", "webhooks/flush", {"timeout": within})
        return list(answer["deliveries"])

    async def deliveries(self) -> list[dict[str, Any]]:
        answer = await self._call("GET", "webhooks/deliveries")
        return list(answer["data"])

    async def redeliver(self, event_id: str) -> int:
        answer = await self._call("POST", f"events/{event_id}/redeliver")
        return int(answer["scheduled"])

    async def advance_clock(self, seconds: int) -> int:
        answer = await self._call("POST", "clock", {"advance": seconds})
        return int(answer["now"])

    async def freeze_clock(self, at: int | None = None) -> int:
        body: dict[str, Any] = {"now": at} if at is not None else {"freeze": True}
        answer = await self._call("POST", "clock", body)
        return int(answer["now"])

    async def unfreeze_clock(self) -> int:
        answer = await self._call("POST", "clock", {"freeze": False})
        return int(answer["now"])

    async def expire_idempotency_keys(self) -> int:
        """What 24 hours do: Stripe forgets every idempotency key."""
        answer = await self._call("POST", "idempotency/expire")
        return int(answer["forgotten"])
