"""Long requests as jobs: a video to stylize, a style to train. Each job has a folder inside the
server's private job folder (mode 0700) for its upload and its result; the upload is deleted
when the job ends, the result when the job is deleted or the server stops. The job folder is
the server's only state.

Several server processes (`engine serve --workers N`) share one job folder. A job runs in the
process that took it, which writes its state to `job.json` in the job's folder as it changes;
the others read it from there, and ask for a job's deletion with a `delete` file in its folder,
which the owner acts on."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EngineError
from .service import StyleOptions, StyleService

JOB_ID = re.compile(r"^[0-9a-f]{16}$")
SHARE_SECONDS = 0.2  # how often an owner writes its jobs' state and looks for deletions


class TooManyJobs(Exception):
    """The server keeps as many jobs as it takes; delete finished ones or try later."""


@dataclass
class Job:
    id: str
    kind: str  # "video" or "train"
    folder: Path
    state: str = "queued"  # queued, running, done, failed, cancelled
    progress: float = 0.0  # 0..1
    message: str = ""
    detail: dict = field(default_factory=dict)
    result: Path | None = None
    created: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen | None = None
    run_folder: Path | None = None  # a train job's run folder (previews, loss plot)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def public(self) -> dict:
        row = {"id": self.id, "kind": self.kind, "state": self.state,
               "progress": round(self.progress, 4), "message": self.message, **self.detail}
        if self.state == "done" and self.result is not None:
            row["result"] = f"/v1/jobs/{self.id}/result"
        if self.kind == "train":
            row["preview"] = f"/v1/jobs/{self.id}/preview"
            row["loss_plot"] = f"/v1/jobs/{self.id}/loss"
        return row


class JobStore:
    def __init__(self, service: StyleService):
        self.service = service
        settings = service.settings
        self.shared = settings.shared_jobs
        if self.shared:  # made (mode 0700) and deleted by the process that started the servers
            self.root = Path(settings.job_dir)
        else:
            if settings.job_dir is not None:
                Path(settings.job_dir).mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix="engine-serve-", dir=settings.job_dir))
            os.chmod(self.root, 0o700)
        self.jobs: dict[str, Job] = {}  # the jobs this process runs
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(settings.running_jobs)
        self._closed = threading.Event()
        self._saved: dict[str, str] = {}
        if self.shared:
            threading.Thread(target=self._share, name="engine-jobs", daemon=True).start()

    def new(self, kind: str) -> Job:
        """A new job's folder. When the server keeps as many jobs as it may, the oldest
        finished one makes room (its result deleted); only running and waiting jobs refuse."""
        with self._lock:
            if len(self.jobs) >= self.service.settings.max_jobs:
                oldest = min((job for job in self.jobs.values() if job.finished),
                             key=lambda job: job.created, default=None)
                if oldest is None:
                    raise TooManyJobs(f"the server is running or holding {len(self.jobs)} "
                                      "jobs; try later")
                self.jobs.pop(oldest.id)
                shutil.rmtree(oldest.folder, ignore_errors=True)
            job_id = secrets.token_hex(8)
            folder = self.root / job_id
            folder.mkdir(mode=0o700)
            job = self.jobs[job_id] = Job(job_id, kind, folder)
        self._save(job)
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None and self.shared and JOB_ID.match(job_id):
            job = self._load(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def all(self) -> list[Job]:
        """Every job: this process's, and the other processes' where the folder is shared."""
        jobs = list(self.jobs.values())
        if self.shared:
            for folder in self.root.iterdir():
                if folder.name not in self.jobs and JOB_ID.match(folder.name):
                    jobs += [job for job in [self._load(folder.name)] if job is not None]
        return sorted(jobs, key=lambda job: job.created)

    def start(self, job: Job, work: Callable[[Job], None]) -> None:
        threading.Thread(target=self._run, args=(job, work), name=f"job-{job.id}",
                         daemon=True).start()

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        if job_id not in self.jobs:  # another process's job: it stops the job and deletes it
            try:
                (job.folder / "delete").touch()
            except OSError:  # (deleted meanwhile)
                return
            deadline = time.monotonic() + 10
            while job.folder.exists() and time.monotonic() < deadline:
                time.sleep(SHARE_SECONDS / 4)
            return
        self.stop(job)
        with self._lock:
            self.jobs.pop(job_id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def stop(self, job: Job) -> None:
        job.cancel.set()
        if job.process is not None and job.process.poll() is None:
            job.process.terminate()

    def close(self) -> None:
        self._closed.set()
        for job in list(self.jobs.values()):
            self.stop(job)
        for job in list(self.jobs.values()):
            if job.process is not None:
                try:
                    job.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    job.process.kill()
        if self.shared:
            for job in list(self.jobs.values()):
                shutil.rmtree(job.folder, ignore_errors=True)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # ----------------------------------------------------------------- a shared job folder

    def _save(self, job: Job) -> None:
        """The job's state in its folder (written whole, then renamed into place)."""
        if not self.shared:
            return
        state = json.dumps({**job.public(), "created": job.created, "owner": os.getpid(),
                            "result_file": str(job.result) if job.result else None,
                            "run_folder": str(job.run_folder) if job.run_folder else None})
        if self._saved.get(job.id) == state:
            return
        try:
            temporary = job.folder / ".job.json.part"
            temporary.write_text(state)
            temporary.replace(job.folder / "job.json")
            self._saved[job.id] = state
        except OSError:  # (the job was deleted meanwhile)
            pass

    def _load(self, job_id: str) -> Job | None:
        try:
            state = json.loads((self.root / job_id / "job.json").read_text())
        except (OSError, ValueError):
            return None
        known = {"id", "kind", "state", "progress", "message", "result", "preview",
                 "loss_plot", "created", "owner", "result_file", "run_folder"}
        if state["state"] in ("queued", "running") and not _alive(state["owner"]):
            state["state"], state["message"] = "failed", "the server process running it ended"
        return Job(job_id, state["kind"], self.root / job_id, state["state"],
                   state["progress"], state["message"],
                   {key: value for key, value in state.items() if key not in known},
                   Path(state["result_file"]) if state["result_file"] else None,
                   state["created"],
                   run_folder=Path(state["run_folder"]) if state["run_folder"] else None)

    def _share(self) -> None:
        """The owner's side: its jobs' state written as it changes, deletions acted on."""
        while not self._closed.wait(SHARE_SECONDS):
            for job in list(self.jobs.values()):
                if (job.folder / "delete").exists():
                    self.delete(job.id)
                    self._saved.pop(job.id, None)
                else:
                    self._save(job)

    def _run(self, job: Job, work: Callable[[Job], None]) -> None:
        with self._slots:
            if job.cancel.is_set():
                job.state = "cancelled"
                return
            job.state = "running"
            try:
                work(job)
                if job.cancel.is_set():
                    job.state, job.message = "cancelled", "cancelled"
                else:
                    job.state, job.progress = "done", 1.0
            except EngineError as error:
                job.state, job.message = "failed", str(error)
            except Exception as error:  # one line for the client; the server goes on
                job.state, job.message = "failed", f"{type(error).__name__}: {error}"
            finally:
                for upload in job.folder.glob("upload*"):
                    upload.unlink(missing_ok=True)
                self._save(job)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (alive, another user's)
        pass
    return True


# --------------------------------------------------------------------- videos


class _Cancelled(EngineError):
    pass


class _QueuedStylizer:
    """What stylize_video needs of a stylizer, its frames sent through the server's queue:
    they share forward passes with the requests of the same style and size."""

    def __init__(self, service: StyleService, options: StyleOptions, job: Job):
        self.service, self.options, self.job = service, options, job

    def uint8(self, frames):
        if self.job.cancel.is_set():
            raise _Cancelled("cancelled")
        return self.service.stylize_now(frames, self.options)


def video_work(service: StyleService, options: StyleOptions, stabilize: bool,
               max_size: int | None, suffix: str) -> Callable[[Job], None]:
    def work(job: Job) -> None:
        from ..io.video import default_batch, output_size, probe, stylize_video

        source = job.folder / f"upload{suffix}"
        info = probe(source)
        size = max_size
        limit = service.settings.max_pixels
        width, height = output_size(info.width, info.height, size)
        if width * height > limit:  # frames above the pixel cap are brought down to it
            scale = (limit / (width * height)) ** 0.5
            size = max(16, int(max(width, height) * scale))
        target = job.folder / "stylized.mp4"
        job.detail.update(frames_total=info.frames, frames=0)

        def on_progress(p) -> None:
            job.progress = p.frames / p.total if p.total else 0.0
            job.detail.update(frames=p.frames, frames_total=p.total,
                              frames_per_second=round(p.frames_per_second, 2))

        try:
            result = stylize_video(source, target, _QueuedStylizer(service, options, job),
                                   default_batch(), size, stabilize, on_progress=on_progress)
        except _Cancelled:
            return
        job.detail.update(frames=result.frames, width=result.width, height=result.height,
                          audio=info.has_audio)
        job.result = target

    return work


# --------------------------------------------------------------------- training


def train_work(service: StyleService, name: str, minutes: float | None,
               steps: int | None, suffix: str) -> Callable[[Job], None]:
    """The training runs in its own process (engine/serve/trainer.py)."""
    settings = service.settings

    def work(job: Job) -> None:
        from ..training.runs import run_dir
        from ..training.settings import UNTIL_TIME_IS_UP

        painting = job.folder / f"painting{suffix}"
        (job.folder / f"upload{suffix}").replace(painting)
        request = {"name": name, "painting": str(painting), "minutes": minutes, "steps": steps,
                   "content": str(settings.content) if settings.content else None,
                   "vgg_weights": str(settings.vgg_weights) if settings.vgg_weights else None}
        request_file = job.folder / "request.json"
        request_file.write_text(json.dumps(request))
        job.detail.update(style=name, step=0, steps=None, loss=None)
        job.run_folder = run_dir(name)
        env = {**os.environ}  # (--device N: CUDA_VISIBLE_DEVICES, set for the server)
        if settings.device == "cpu":
            env["ENGINE_DEVICE"] = "cpu"
        job.process = subprocess.Popen(
            [sys.executable, "-m", "engine.serve.trainer", str(request_file)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True)
        if job.cancel.is_set():
            job.process.terminate()
        outcome = None
        for line in job.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "ready":
                job.message = "compiling the first step" if event.get("step", 0) == 0 else ""
            elif kind == "step":
                job.message = ""
                planned = event["steps"] if event["steps"] < UNTIL_TIME_IS_UP else None
                job.detail.update(step=event["step"], steps=planned, loss=event["loss"],
                                  images_per_second=event.get("images_per_second"))
                if planned:
                    job.progress = min(1.0, event["step"] / planned)
            elif kind in ("done", "error"):
                outcome = event
        job.process.wait()
        if job.cancel.is_set():
            return
        if outcome is None or outcome["event"] == "error":
            raise EngineError(outcome["message"] if outcome else
                              f"the training process ended (exit code {job.process.returncode})")
        job.detail.update(steps=outcome.get("steps"), step=outcome.get("steps"))
        service.refresh()
        job.message = f"style {name!r} is ready"

    return work
