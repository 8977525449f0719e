"""`python -m coalition.settlement.simulator`: the standalone Stripe simulator."""

from coalition.settlement.simulator.cli import stripe_simulator_command

stripe_simulator_command(prog_name="python -m coalition.settlement.simulator")
