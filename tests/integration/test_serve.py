"""`coalition serve --workers 2`, run as deployed: each worker on a listening socket of its
own, connections spread over both, a dead worker started again, a clean stop on SIGTERM.
Sockets and their holders are read from Linux's /proc."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coalition.platform.settings import Settings

STARTS_WITHIN = 60.0
LISTEN, ESTABLISHED = "0A", "01"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sockets_on(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 TCP sockets on local `port` in `state` (`/proc/net/tcp`)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            inodes.add(fields[9])
    return inodes


def holders(pids: list[int], inodes: set[str]) -> dict[int, int]:
    """How many of the sockets `inodes` each process holds open."""
    held = {}
    for pid in pids:
        count = 0
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except FileNotFoundError:  # the process is gone (a killed worker, reaped)
            descriptors = []
        for fd in descriptors:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            found = re.fullmatch(r"socket:\[(\d+)\]", target)
            count += bool(found and found.group(1) in inodes)
        held[pid] = count
    return held


def workers_of(parent: int, port: int) -> list[int]:
    """The server's worker processes: its children listening on `port` (multiprocessing's
    resource tracker is a child too)."""
    children = [
        int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    ]
    listening = sockets_on(port, LISTEN)
    return sorted(pid for pid, held in holders(children, listening).items() if held)


def get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=STARTS_WITHIN) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return int(connection.recv(64)[9:12])


@contextmanager
def served(settings: Settings, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "COALITION_ENVIRONMENT": "test",
    }
    command = [sys.executable, "-m", "coalition.platform.cli", "serve", "--workers", "2"]
    with log.open("a") as output:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTS_WITHIN
        while len(workers_of(server.pid, port)) < 2 or not ready(port):
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def ready(port: int) -> bool:
    try:
        return get(port, "/health/live") == 200
    except OSError:
        return False


async def hold_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` kept-alive connections, each having had one answer."""
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writers.append(writer)
    return writers


async def test_each_worker_listens_on_its_own_socket_and_takes_a_share_of_connections(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    with served(settings, port, tmp_path / "serve.log") as server:
        workers = workers_of(server.pid, port)
        listening = sockets_on(port, LISTEN)
        assert len(listening) == 2  # one per worker, on the same port
        assert sorted(holders(workers, listening).values()) == [1, 1]

        writers = await hold_connections(port, 64)
        try:
            # The kernel picks a socket per connection by a hash of its addresses: with 64
            # connections both workers get some (all on one: a chance of 2 in 2**64).
            share = holders(workers, sockets_on(port, ESTABLISHED))
            assert sum(share.values()) == 64
            assert min(share.values()) > 0, share
        finally:
            for writer in writers:
                writer.close()


def test_a_killed_worker_is_started_again_and_sigterm_stops_everything(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with served(settings, port, log) as server:
        first = workers_of(server.pid, port)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + STARTS_WITHIN
        # A new worker takes over the dead one's socket: again one per worker.
        while len(set(workers_of(server.pid, port)) - {first[0]}) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        replaced = workers_of(server.pid, port)
        assert first[1] in replaced and first[0] not in replaced
        assert len(sockets_on(port, LISTEN)) == 2
        assert [get(port, "/health/live") for _ in range(20)] == [200] * 20

        # A second server on the same port is refused, not let into the first one's sockets.
        second = subprocess.run(
            [sys.executable, "-m", "coalition.platform.cli", "serve", "--port", str(port)],
            env={**os.environ, "COALITION_HOST": "127.0.0.1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in second.stderr

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=STARTS_WITHIN) == 0, log.read_text()
        for pid in replaced:
            assert gone(pid)
        assert not sockets_on(port, LISTEN)


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting to be)."""
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
