"""The one training loop that styles, the any-painting network and generators run through.

Steps are pipelined: step t+1 is queued (mx.async_eval) before step t's losses are read, so the
GPU does not wait while the host reads a loss, updates the progress bar, converts the next batch
and launches the next step. A run may hand its file writing to the loop's background writer
(`self.writer`), which the loop joins at its end.
A timed run plans its length from the step rate so far (steps after the first, whose time is
compilation), again and again, until the learning-rate decay is near: then the decay's length,
a fraction of the total, stays. Ctrl-C keeps every step already run; a loss that is not finite
ends the run before anything is written from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

import mlx.core as mx

from .runs import BackgroundWriter, diverged

_clock = time.perf_counter  # (tests of timed runs replace it)


class TrainingLoop:
    """A run's loop. A kind of run subclasses it and provides:

    - `run_step(batch)`: one step on a host batch, returning its losses (arrays, the first the
      total), with `self.state` the arrays the step updates;
    - `record(step, values, rate, show)`: keep one step's losses (floats) and, if `show`, report
      them (`rate`: images a second since the first step);
    - `save_progress(step, checkpointing, shown)`: a checkpoint and/or a preview at `shown`;
    - `due(step)` (optional): whether `step` ends with a checkpoint, and the preview path it
      shows, by default every `checkpoint_every` / `preview_every` steps;
    - `planned_changed()` (optional): a timed run's planned total moved (`self.planned`).

    It calls `start_loop(step, steps, ...)` before `loop(batches, started)`: `step` is where the
    run starts (a checkpoint's step on resume), `steps` its total or, timed, its ceiling.
    """

    checkpoint: Path
    state: list
    run: Path

    def start_loop(self, step: int, steps: int, images_per_step: int, seconds: float = 0.0,
                   decay: float = 0.0, checkpoint_every: int = 0, preview_every: int = 0,
                   main: bool = True, resume: bool = False) -> None:
        self.step, self.planned, self.ceiling = step, steps, steps
        self.images_per_step = images_per_step
        self.seconds, self.decay, self.main = seconds, decay, main
        self.checkpoint_every, self.preview_every = checkpoint_every, preview_every
        self.writer = BackgroundWriter()
        self.saved = step if resume else None  # the last step whose weights are on disk
        # the rate counts from the end of the first step: that one compiles the step's kernels
        # (seconds on a CPU, minutes on a fresh GPU) and would hold the rate down all run long
        self.timer: tuple[int, float] | None = None
        self.queued: list[tuple[int, tuple[mx.array, ...]]] = []  # steps run, losses not read
        self.reported = step  # the last step whose losses are recorded
        self.planning, self.planned_at = self.timed, 0.0

    @property
    def timed(self) -> bool:
        return self.seconds > 0

    def loop(self, batches: Iterable, started: float) -> tuple[bool, float]:
        """Run the steps of `batches` (timed: until `seconds` after `started`); returns whether
        Ctrl-C ended it and the seconds its first step took. The writer's thread is joined
        however the loop ends, after `finish(interrupted)` made the last save."""
        self.deadline = started + self.seconds
        self.reserve = min(2.0, 0.02 * self.seconds)  # the final save, the steps in flight
        ready = _clock()
        interrupted = False
        try:
            try:
                self._steps(batches)
            except KeyboardInterrupt:
                interrupted = True
                while self.queued:  # the steps already run are kept, with their losses
                    self.report(show=False)
            self.planned = min(self.planned, self.step)  # a timed run's record: steps it had
            self.finish(interrupted)
            self.writer.wait()
        finally:
            self.writer.close()
        return interrupted, (self.timer[1] - ready if self.timer else 0.0)

    def finish(self, interrupted: bool) -> None:
        """The save at the end of the loop (every step's losses are recorded)."""
        self.save_progress(self.step)

    def _steps(self, batches: Iterable) -> None:
        for batch in batches:
            outputs = self.run_step(batch)
            # the update is in the network's state once the step returns: counted now, so an
            # interrupt while it computes saves it with its step (and --resume goes on after it)
            self.step += 1
            step = self.step
            mx.async_eval(*outputs, self.state)
            self.queued.append((step, outputs))
            saving, shown = self.due(step)
            while len(self.queued) > 1 or (self.queued and (saving or shown)):
                self.report()  # before a save, every loss up to this step: the history matches
            if saving or shown:
                self.save_progress(step, checkpointing=saving, shown=shown)
            if self.timed:
                now = _clock()
                if self.planning:
                    self.plan(now)
                if step >= self.planned or now >= self.deadline - self.reserve:
                    break
        while self.queued:
            self.report()

    def due(self, step: int) -> tuple[bool, Path | None]:
        saving = bool(self.checkpoint_every) and step % self.checkpoint_every == 0 \
            and step < self.planned
        showing = self.main and bool(self.preview_every) and step % self.preview_every == 0
        return saving, self.run / f"preview-{step:06d}.png" if showing else None

    def report(self, show: bool = True) -> None:
        """Read the oldest queued step's losses (waiting for that step) and record them."""
        done_step, outputs = self.queued.pop(0)
        values = tuple(float(value) for value in outputs)
        if not all(map(math.isfinite, values)):
            raise diverged(done_step, self.saved, self.checkpoint)
        self.reported = done_step
        now = _clock()
        self.timer = self.timer or (done_step, now)
        done = (done_step - self.timer[0]) * self.images_per_step
        seconds = now - self.timer[1]
        self.record(done_step, values, done / seconds if done and seconds > 0 else 0.0, show)

    def plan(self, now: float) -> None:
        """A timed run: the total steps that fit the time left at the rate so far."""
        timer, reported = self.timer, self.reported
        if timer is None or reported - timer[0] < 5 or now - self.planned_at < 0.5:
            return
        rate = (reported - timer[0]) / (now - timer[1])
        fits = reported + int(rate * (self.deadline - self.reserve - now))
        self.planned = max(self.step + 1, min(self.ceiling, fits))
        self.planned_at = now
        self.planned_changed()
        self.planning = self.step < 0.9 * (self.planned - round(self.planned * self.decay))

    def planned_changed(self) -> None:
        pass

    def run_step(self, batch) -> tuple[mx.array, ...]:
        raise NotImplementedError

    def record(self, step: int, values: tuple[float, ...], rate: float, show: bool) -> None:
        raise NotImplementedError

    def save_progress(self, step: int, checkpointing: bool = True,
                      shown: Path | None = None) -> None:
        raise NotImplementedError
