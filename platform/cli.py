"""The `coalition` command line: dev stack, API server, worker, migrations, demo and bootstrap."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from coalition.platform.settings import Settings, get_settings

if TYPE_CHECKING:
    from coalition.platform.demo import DemoReport

T = TypeVar("T")


def _run_with_session(work: Callable[..., Awaitable[T]], settings: Settings) -> T:
    from coalition.platform.db import make_engine, make_sessionmaker

    async def run() -> T:
        engine = make_engine(settings, pool_size=2)
        try:
            async with make_sessionmaker(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _require_database(settings: Settings) -> str:
    if not settings.database_url:
        raise click.ClickException(
            "DATABASE_URL is not set. Set it, or run `coalition dev` for the embedded stack."
        )
    return settings.database_url


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Coalition: joint co-funded coupon campaigns between a carrier and its partners."""


@main.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option(
    "--down", is_flag=True, help="Downgrade to REVISION instead (e.g. --down --revision base)."
)
def migrate(revision: str, down: bool) -> None:
    """Apply database migrations (Alembic) to DATABASE_URL."""
    from coalition.platform import migrate as migrations

    url = _require_database(get_settings())
    (migrations.downgrade if down else migrations.upgrade)(url, revision)
    click.echo(f"database at {'down' if down else 'up'}grade target: {revision}")


@main.command("seed-demo")
def seed_demo_command() -> None:
    """Create the demo organizations and staff (safe to run again)."""
    from coalition.platform.demo import DEMO_PASSWORD, seed_demo

    settings = get_settings()
    _require_database(settings)
    report = _run_with_session(seed_demo, settings)
    click.echo("demo data created" if report.created else "demo data already present")
    _print_demo(report, DEMO_PASSWORD)


@main.command("create-carrier")
@click.option("--name", required=True, help="The carrier organization's name.")
@click.option("--admin-email", required=True, help="Email of its first admin.")
@click.option("--admin-name", default="Administrator", show_default=True)
@click.password_option("--password", help="The admin's password (prompted if omitted).")
def create_carrier(name: str, admin_email: str, admin_name: str, password: str) -> None:
    """Bootstrap an installation: the carrier organization and its first admin."""
    from coalition.merchants.services.organizations import bootstrap_carrier
    from coalition.platform.errors import DomainError

    settings = get_settings()
    _require_database(settings)

    async def work(session: object) -> str:
        org, admin = await bootstrap_carrier(
            session,  # type: ignore[arg-type]
            name=name,
            admin_email=admin_email,
            admin_name=admin_name,
            password=password,
        )
        return f"created carrier {org.name} ({org.id}) with admin {admin.email}"

    try:
        click.echo(_run_with_session(work, settings))
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc


@main.command()
@click.option("--host", default=None, help="Bind address (default COALITION_HOST).")
@click.option("--port", type=int, default=None, help="Port (default COALITION_PORT).")
@click.option("--workers", type=int, default=1, show_default=True, help="Server processes.")
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Run the HTTP API and portal (production server: uvicorn with uvloop, each worker
    process on its own listening socket; see `platform/server.py`)."""
    from coalition.platform import server

    settings = get_settings()
    _require_database(settings)
    host, port = host or settings.host, port or settings.port
    try:
        status = server.serve(
            "coalition.platform.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            proxy_headers=True,
            log_level="warning",
        )
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    if status:
        raise SystemExit(status)


@main.command()
def worker() -> None:
    """Run the background worker (arq) for every domain's jobs and schedules."""
    from coalition.platform.worker import run_worker

    settings = get_settings()
    _require_database(settings)
    run_worker(settings)


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".coalition/dev"),
    show_default=True,
    help="Where the embedded PostgreSQL and Redis keep their data.",
)
@click.option("--port", type=int, default=8000, show_default=True, help="API port.")
def dev(data_dir: Path, port: int) -> None:
    """Run everything locally: embedded PostgreSQL + Redis, migrations, demo data, API, worker.

    Uses DATABASE_URL / REDIS_URL instead when they are set. Ctrl-C stops it all cleanly;
    the next run keeps the data.
    """
    import uvicorn

    from coalition.platform import migrate as migrations
    from coalition.platform.demo import DEMO_PASSWORD, seed_demo
    from coalition.platform.embedded import EmbeddedStack

    base = get_settings()
    from coalition.settlement.simulator.server import SimulatorServer, start_dev_simulator

    stack: EmbeddedStack | None = None
    stripe_simulator: SimulatorServer | None = None
    worker_process: subprocess.Popen[bytes] | None = None
    try:
        if not base.database_url or not base.redis_url:
            data_dir.mkdir(parents=True, exist_ok=True)
            click.echo(f"starting embedded PostgreSQL and Redis in {data_dir} ...")
            stack = EmbeddedStack(data_dir)
            stack.start()
            os.environ.setdefault("DATABASE_URL", stack.database_url)
            os.environ.setdefault("REDIS_URL", stack.redis_url)
        os.environ.setdefault("COALITION_PUBLIC_URL", f"http://127.0.0.1:{port}")
        if not base.stripe_api_key:
            stripe_simulator = start_dev_simulator(data_dir)
        get_settings.cache_clear()
        settings = get_settings()
        url = _require_database(settings)
        migrations.upgrade(url)
        report = _run_with_session(seed_demo, settings)
        worker_process = subprocess.Popen(
            [sys.executable, "-m", "coalition.platform.cli", "worker"], env=os.environ.copy()
        )
        app_url = f"http://127.0.0.1:{port}"
        click.echo("")
        click.echo(f"  API          {app_url}/api/v1")
        click.echo(f"  Portal       {app_url}/portal   (customers: {app_url}/portal/customer)")
        click.echo(f"  API docs     {app_url}/schema")
        click.echo(f"  OpenAPI      {app_url}/schema/openapi.json")
        click.echo(f"  Health       {app_url}/health/ready")
        click.echo(f"  Metrics      {app_url}/metrics")
        click.echo(f"  PostgreSQL   {settings.database_url}")
        click.echo(f"  Redis        {settings.redis_url}")
        if stripe_simulator is not None:
            click.echo(
                f"  Stripe       {stripe_simulator.url}  (simulator; control API /_simulator/)"
            )
        _print_demo(report, DEMO_PASSWORD)
        click.echo("\nPress Ctrl-C to stop.\n")
        uvicorn.run(
            "coalition.platform.app:create_app",
            factory=True,
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_level="warning",
        )
    finally:
        if worker_process is not None and worker_process.poll() is None:
            worker_process.send_signal(signal.SIGTERM)
            try:
                worker_process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker_process.kill()
        if stripe_simulator is not None:
            stripe_simulator.stop()
        if stack is not None:
            stack.stop()
        click.echo("stopped; data kept in " + str(data_dir))


def _print_demo(report: DemoReport, password: str) -> None:
    click.echo(f"\nDemo logins (password for all: {password})")
    for org, email, role in report.logins:
        click.echo(f"  {role:<10} {email:<26} {org}")
    if report.terminal_keys:
        click.echo(
            "\nPOS terminal keys (new at every start; send as `Authorization: Bearer <key>`)"
        )
        for org, store, terminal, key in report.terminal_keys:
            click.echo(f"  {org} / {store} / {terminal}\n    {key}")
    click.echo(
        '\nCustomers sign in with a one-time code: POST /api/v1/customers/otp {"phone": ...};'
        "\n  the console SMS gateway writes it to .coalition/sms-outbox.log"
    )


def _register_domain_commands() -> None:
    from coalition.campaigns.controllers.issuance import issue_command
    from coalition.settlement.simulator.cli import stripe_simulator_command

    main.add_command(issue_command, name="issue")
    main.add_command(stripe_simulator_command, name="stripe-simulator")


_register_domain_commands()


if __name__ == "__main__":
    main(prog_name="coalition")
