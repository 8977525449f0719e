"""Run the simulator: in a background thread on a loopback port (tests, `coalition dev`), or
standalone (`coalition stripe-simulator`, or `python -m coalition.settlement.simulator`).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn

from coalition.settlement.simulator.app import SimulatorConfig, StripeSimulator

DEFAULT_PORT = 12111
DEV_API_KEY = "sk_test_coalition_simulator"
DEV_WEBHOOK_SECRET = "whsec_coalition_dev_simulator"  # noqa: S105 - the simulator's only
DEV_STATE_FILE = "stripe-simulator.json"
DEV_PLATFORM_FUNDS = {"cny": 10_000_000_000, "usd": 1_000_000_000}  # in minor units


class BackgroundServer:
    """An ASGI app served by uvicorn in a daemon thread on `host:port` (0: a free port)."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        self._startup_timeout = startup_timeout
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                lifespan="on",
                log_level="critical",
                access_log=False,
                timeout_keep_alive=30,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
            name="stripe-simulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Stripe simulator did not start")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SimulatorServer(BackgroundServer):
    """The simulator in a background thread; `url` is where the SDK's base address points."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.app = StripeSimulator(config)
        super().__init__(self.app, host=host, port=port, startup_timeout=startup_timeout)


def start_dev_simulator(data_dir: Path) -> SimulatorServer:
    """`coalition dev` without a Stripe key: the simulator on port 12111 (or a free one), its
    state kept in `<data_dir>/stripe-simulator.json`, the platform funded once, and the
    COALITION_STRIPE_* variables pointing the gateway (and the worker) at it."""
    import os

    import httpx

    data_dir.mkdir(parents=True, exist_ok=True)
    config = SimulatorConfig(state_file=data_dir / DEV_STATE_FILE)
    try:
        server = SimulatorServer(config, port=DEFAULT_PORT)
    except OSError:
        server = SimulatorServer(config, port=0)
    server.start()
    auth = {"Authorization": f"Bearer {DEV_API_KEY}"}
    balance = httpx.get(f"{server.url}/v1/balance", headers=auth, timeout=10).json()
    funded = {item["currency"] for item in balance.get("available", [])}
    for currency, amount in DEV_PLATFORM_FUNDS.items():
        if currency not in funded:
            httpx.post(
                f"{server.url}/_simulator/balance/topup",
                json={"amount": amount, "currency": currency},
                timeout=10,
            ).raise_for_status()
    os.environ["COALITION_STRIPE_API_KEY"] = DEV_API_KEY
    os.environ["COALITION_STRIPE_API_BASE"] = server.url
    os.environ.setdefault("COALITION_STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)
    return server


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    seed: int | None = None,
    state_file: Path | None = None,
    api_keys: frozenset[str] | None = None,
) -> None:
    """Run the simulator in the foreground until interrupted."""
    config = SimulatorConfig(seed=seed, state_file=state_file, api_keys=api_keys)
    uvicorn.run(StripeSimulator(config), host=host, port=port, lifespan="on", log_level="warning")
