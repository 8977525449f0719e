"""The `coalition stripe-simulator` command."""

from __future__ import annotations

from pathlib import Path

import click

from coalition.settlement.simulator.server import DEFAULT_PORT, serve


@click.command("stripe-simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option(
    "--seed", type=int, default=None, help="Deterministic ids (the same calls, the same ids)."
)
@click.option(
    "--state-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Keep the state in this JSON file across restarts.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Accept only these secret keys (default: any sk_test_... key).",
)
def stripe_simulator_command(
    host: str, port: int, seed: int | None, state_file: Path | None, api_keys: tuple[str, ...]
) -> None:
    """Run the Stripe simulator (the `/v1` API and its `/_simulator` control API)."""
    click.echo(f"Stripe simulator on http://{host}:{port} (control API under /_simulator/)")
    serve(
        host=host,
        port=port,
        seed=seed,
        state_file=state_file,
        api_keys=frozenset(api_keys) if api_keys else None,
    )
