"""`engine serve --workers N`: N server processes on one listening socket (and one GPU).

One process has one interpreter lock: its event loop reads and writes every request's bytes, and
its MLX thread waits for that lock between passes. Several processes share the work the way
any pre-forking server does: the parent binds the address once and starts the workers (spawned,
so each starts MLX on its own); the kernel hands each new connection to one of them. Each worker
is a whole server (its styles, its MLX thread, its batches); the job folder is shared.

The parent prints the address once every worker listens, starts another worker in place of one
that ends on its own, and stops them all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path

from ..errors import EngineError, UsageError
from .service import ServeSettings

START_SECONDS = 600  # a worker's start: MLX, the styles loaded, first passes compiled
STEADY_SECONDS = 60  # a worker that ends sooner than this after its start ended "as it started"


def bind(host: str, port: int) -> socket.socket:
    """The server's listening socket (UsageError, one line, when the address is taken)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host} port {port}: {error.strerror or error}; "
                         "choose another --port (0: any free port)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_workers(settings: ServeSettings, count: int, config: dict,
                on_listening: Callable[[int], None], say: Callable[[str], None]) -> None:
    """Run `count` workers until a signal stops them. `config`: uvicorn.Config's keywords. A
    worker that ends on its own is replaced (`say` tells); one that keeps ending as it starts
    stops them all."""
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    if settings.job_dir is not None:
        Path(settings.job_dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="engine-serve-", dir=settings.job_dir))
    os.chmod(root, 0o700)
    settings = replace(settings, port=port, job_dir=root, shared_jobs=True)
    context = multiprocessing.get_context("spawn")  # (no MLX or CUDA state crosses a fork)
    ready = context.SimpleQueue()

    def start(i: int):
        worker = context.Process(target=_worker, args=(settings, sock, config, ready),
                                 name=f"engine-serve-{i}")
        worker.start()
        worker.started = time.monotonic()
        return worker

    workers = []
    stopping = []

    def stop_all() -> None:
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    def on_signal(signum, frame) -> None:
        stopping.append(signum)
        stop_all()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        workers += [start(i) for i in range(count)]
        _wait_ready(workers, ready, count)
        on_listening(port)
        quick_ends = 0
        while not stopping:
            wait([worker.sentinel for worker in workers])
            for i, worker in enumerate(workers):
                if worker.is_alive() or stopping:
                    continue
                lived = time.monotonic() - worker.started
                quick_ends = quick_ends + 1 if lived < STEADY_SECONDS else 0
                if quick_ends > 3:
                    raise EngineError(f"server process {worker.name} keeps ending as it starts"
                                      f" (exit code {worker.exitcode}); the others were stopped")
                say(f"server process {worker.name} ended (exit code {worker.exitcode}) after "
                    f"{lived:.0f} s; starting another")
                workers[i] = start(i)
    except KeyboardInterrupt:  # Ctrl-C reached every worker too: they finish and stop
        stopping.append(signal.SIGINT)
    finally:
        if signal.SIGINT not in stopping:
            stop_all()
        _join(workers)
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        shutil.rmtree(root, ignore_errors=True)


def _join(workers) -> None:
    for worker in workers:
        if worker.pid is not None:
            worker.join(60)
            if worker.is_alive():
                worker.kill()


def _wait_ready(workers, ready, count: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    started = 0
    while started < count:
        if time.monotonic() > deadline:
            raise EngineError(f"only {started} of {count} server processes started in "
                              f"{START_SECONDS} s")
        dead = [worker for worker in workers if worker.exitcode is not None]
        if dead:
            raise EngineError(f"server process {dead[0].name} ended as it started (exit code "
                              f"{dead[0].exitcode})")
        while not ready.empty():
            ready.get()
            started += 1
        time.sleep(0.05)


def _worker(settings: ServeSettings, sock, config: dict, ready) -> None:
    import sys

    import uvicorn

    from .app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), **config))
    started = server.startup

    async def startup(sockets=None):
        await started(sockets=sockets)
        ready.put(os.getpid())

    server.startup = startup
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # (as `engine serve` itself: MLX's static destructors are not run)
