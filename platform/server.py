"""The production HTTP server behind `coalition serve`: uvicorn worker processes, each
accepting on a listening socket of its own.

uvicorn's own `--workers` hands one socket to every worker, and whichever is first to
`accept()` takes the connection. Tills keep their connection open, so a split made once lasts:
measured with 32 terminals on 2 workers, it came out 9/23 and 10/22, and the terminals on the
busier worker waited twice as long as the others (`bench/redeem.py` prints the spread). Here
each worker gets its own socket on the same port (`SO_REUSEPORT`), and the kernel spreads new
connections over the sockets by a hash of each connection's addresses.

Each worker freezes the heap it built at startup (`gc.freeze()`): the cyclic collector's full
collections took about 7% of the worker's samples in `bench/redeem.py`, walking objects that
live as long as the process. The supervisor starts the workers, starts a worker again on its
socket when it dies (a worker that fails to start stops the server), and passes SIGINT /
SIGTERM on as SIGTERM, after which each worker finishes its requests in flight and exits.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing.context import SpawnProcess
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

logger = logging.getLogger("coalition.server")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) that other sockets may share (`SO_REUSEPORT`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class _Worker(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything built by now (modules, routes, models, mapper configuration, the app's
        # startup) lives as long as the process: kept out of the collector's sight, a full
        # collection no longer walks it while requests wait on the event loop.
        gc.collect()
        gc.freeze()


def _serve_on(config: uvicorn.Config, sock: socket.socket) -> None:
    """A worker process: logging set up again (a spawned process starts bare), then serve."""
    config.configure_logging()
    # Ctrl-C reaches the whole process group: the server shuts down, without a traceback.
    with contextlib.suppress(KeyboardInterrupt):
        _Worker(config).run(sockets=[sock])


class Supervisor:
    """One worker process per socket, kept running until told to stop."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.workers: list[SpawnProcess] = []
        self.stopping = threading.Event()

    def _start(self, sock: socket.socket) -> SpawnProcess:
        # Spawned, not forked: a fresh interpreter imports the app itself (the socket is
        # passed over by multiprocessing).
        process = multiprocessing.get_context("spawn").Process(
            target=_serve_on, args=(self.config, sock)
        )
        process.start()
        return process

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.stopping.set())
        self.workers = [self._start(sock) for sock in self.sockets]
        status = 0
        while not self.stopping.wait(0.5):
            for index, worker in enumerate(self.workers):
                if worker.is_alive():
                    continue
                if worker.exitcode == STARTUP_FAILURE:
                    logger.error("worker %s failed to start: stopping the server", worker.pid)
                    status = STARTUP_FAILURE
                    self.stopping.set()
                    break
                logger.warning(
                    "worker %s exited (%s): starting another", worker.pid, worker.exitcode
                )
                self.workers[index] = self._start(self.sockets[index])
        for worker in self.workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            worker.join()
        for sock in self.sockets:
            sock.close()
        return status


def ensure_free(host: str, port: int) -> None:
    """Fail (`OSError`, address in use) when anything listens on (host, port) already: sockets
    with `SO_REUSEPORT` would otherwise join another server's on that port without a word."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def serve(app: str, *, host: str, port: int, workers: int, **options: Any) -> int:
    """Run `app` (an import string) on `workers` processes; returns the exit status."""
    config = uvicorn.Config(app, host=host, port=port, **options)
    ensure_free(host, port)
    sockets = [listening_socket(host, port) for _ in range(workers)]
    return Supervisor(config, sockets).run()
