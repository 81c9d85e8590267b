"""One thread owns MLX: every forward pass of the server runs on it, in batches.

Requests for the same style and options and the same image size that wait together share one
forward pass: the worker takes the oldest request and, while others are on their way (announced
with `coming()`: their uploads being read and decoded), waits up to `wait` seconds (or until
`max_batch` are there) for others of its kind, then runs them as one batch. A lone request runs
at once. While a batch computes, the next ones gather, so under load batches fill on their own;
and while the device computes one batch, the host copies the last one out.
The queue of waiting requests is bounded: one more is refused (QueueFull) instead of waiting
without end.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

MAX_BATCH_PIXELS = 2**23  # of one batch (a pass's memory grows with them): four 1080p frames


class QueueFull(Exception):
    """The server has as many requests waiting as it takes; try again shortly."""


@dataclass
class _Request:
    key: Hashable
    frame: np.ndarray
    future: Future
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest: int = 0
    refused: int = 0


Finish = Callable[[], np.ndarray]


class Batcher:
    """`submit(key, frame)` -> a Future of the stylized frame. `run(key, frames)` computes one
    batch (uint8 (B, H, W, 3) in and out) on the worker thread; `key` says which requests may
    share a batch (style, options and image size). `run` may instead start the batch's pass and
    answer a function that waits for it and gives the frames: the worker then gathers and
    starts the next batch before it waits, so the device computes one batch while the host
    copies the last one out. `call(fn)` runs any other MLX work on the same thread (loading a
    style, a painting's code)."""

    def __init__(self, run: Callable[[Hashable, np.ndarray], np.ndarray | Finish],
                 max_batch: int = 8,
                 wait: float = 0.002, max_queue: int = 64, setup: Callable[[], None] | None = None):
        if max_batch < 1 or max_queue < 1 or wait < 0:
            raise ValueError("max_batch and max_queue must be 1 or more, wait 0 or more")
        self._run, self.max_batch, self.wait, self.max_queue = run, max_batch, wait, max_queue
        self._pending: deque[_Request] = deque()
        self._calls: deque[tuple[Callable, Future]] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._coming = 0  # requests announced by coming(), not yet submitted
        self.stats = BatchStats()
        self._thread = threading.Thread(target=self._work, args=(setup,), name="engine-mlx",
                                        daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, frame: np.ndarray) -> Future:
        future: Future = Future()
        with self._ready:
            if self._stopping:
                raise QueueFull("the server is stopping")
            if len(self._pending) >= self.max_queue:
                self.stats.refused += 1
                raise QueueFull(f"{len(self._pending)} requests are waiting already")
            self._pending.append(_Request(key, frame, future))
            self.stats.requests += 1
            self._ready.notify()
        return future

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Announce a request on its way to `submit` (its upload being read and decoded) for
        the time of the block: a batch being gathered waits for it, up to `wait`."""
        with self._ready:
            self._coming += 1
        try:
            yield
        finally:
            with self._ready:
                self._coming -= 1
                self._ready.notify()

    def call(self, function: Callable, *args, **kwargs) -> Future:
        """`function(*args, **kwargs)` on the worker thread, ahead of waiting batches."""
        future: Future = Future()
        with self._ready:
            if self._stopping:
                raise QueueFull("the server is stopping")
            self._calls.append((lambda: function(*args, **kwargs), future))
            self._ready.notify()
        return future

    def largest(self, frame: np.ndarray) -> int:
        """The most frames of this one's size that share a pass."""
        return max(1, min(self.max_batch, MAX_BATCH_PIXELS // (frame.shape[0] * frame.shape[1])))

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new work, let the worker finish what is queued, and stop it."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join(timeout)

    # ----------------------------------------------------------------- the worker

    def _work(self, setup: Callable[[], None] | None) -> None:
        if setup is not None:
            setup()
        running = None  # a batch whose pass was started, not yet waited for
        while True:
            call = batch = None
            with self._ready:
                while running is None and not (self._pending or self._calls or self._stopping):
                    self._ready.wait()
                if self._calls:
                    call = self._calls.popleft()
                elif self._pending:  # (with a pass running, no waiting for more)
                    batch = self._gather(wait=running is None)
                elif running is None:  # stopping, and nothing is left
                    return
            if call is not None:
                _settle(call[1], call[0])
            started = self._start(batch) if batch else None
            if running is not None:
                _finish(*running)
            running = started

    def _gather(self, wait: bool = True) -> list[_Request]:
        """The oldest request and those of its kind, waiting (with `wait`) up to `wait` seconds
        for more while more are on their way (the lock held; Condition.wait releases it)."""
        key = self._pending[0].key
        deadline = self._pending[0].arrived + self.wait
        largest = self.largest(self._pending[0].frame)
        while wait and not self._stopping and not self._calls:
            same = sum(1 for request in self._pending if request.key == key)
            left = deadline - time.perf_counter()
            if same >= largest or left <= 0 or not self._coming:
                break
            self._ready.wait(left)
        batch, rest = [], deque()
        for request in self._pending:
            if request.key == key and len(batch) < largest:
                batch.append(request)
            else:
                rest.append(request)
        self._pending = rest
        return batch

    def _start(self, batch: list[_Request]) -> tuple[list[_Request], Finish] | None:
        """The batch's pass started (or done): its live requests and what gives their frames."""
        live = [request for request in batch if request.future.set_running_or_notify_cancel()]
        if not live:
            return None
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, len(live))
        try:
            frames = (live[0].frame[None] if len(live) == 1  # (a view: no copy of a lone frame)
                      else np.stack([request.frame for request in live]))
            outputs = self._run(live[0].key, frames)
        except BaseException as error:  # every waiting request hears of it; the worker goes on
            outputs = _raise(error)
        return live, outputs if callable(outputs) else lambda: outputs


def _finish(live: list[_Request], outputs: Finish) -> None:
    try:
        frames = outputs()
    except BaseException as error:
        for request in live:
            request.future.set_exception(error)
        return
    for request, output in zip(live, frames):
        request.future.set_result(output)


def _raise(error: BaseException) -> Finish:
    def finish():
        raise error
    return finish


def _settle(future: Future, function: Callable) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(function())
    except BaseException as error:
        future.set_exception(error)
