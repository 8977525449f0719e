"""A Stripe simulator that the real `stripe` SDK talks to over HTTP (see README, "Stripe")."""

from coalition.settlement.simulator.app import SimulatorConfig, StripeSimulator
from coalition.settlement.simulator.server import DEV_API_KEY, SimulatorServer
from coalition.settlement.simulator.webhooks import signature_header

__all__ = [
    "DEV_API_KEY",
    "SimulatorConfig",
    "SimulatorServer",
    "StripeSimulator",
    "signature_header",
]
