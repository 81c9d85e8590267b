"""The API's routes: styles, one image, jobs (videos, training) and the webcam's WebSocket.
Each reaches the server's state through `server(request)`: the styles service, the job store and
the settings that `create_app` put on the app."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import (
    APIRouter,
    File,
    Form,
    Query,
    Request,
    UploadFile,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import EngineError, UsageError
from .batching import QueueFull
from .codec import FORMATS, decode_frame, encode_frame, pick_format, ppm_parts
from .jobs import Job, JobStore, train_work, video_work
from .service import ServeSettings, StyleOptions, StyleService

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
PAINTING_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}

api = APIRouter()


class ApiError(Exception):
    """An error with its HTTP status (the app answers it as {"error": message})."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Server:
    """What the routes share, made by the app's lifespan."""

    settings: ServeSettings
    service: StyleService
    jobs: JobStore

    def job(self, job_id: str) -> Job:
        try:
            return self.jobs.get(job_id)
        except KeyError:
            raise ApiError(404, f"no job {job_id!r}") from None


def server(request: Request | WebSocket) -> Server:
    return request.app.state.server


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"{what} is over {limit // 2**20} MB; send a smaller file")


async def read_upload(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise _too_large(what, limit)
    return data


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """A request's whole body (an image sent as itself), refused past `limit` bytes."""
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(what, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def save_upload(upload: UploadFile, target: Path, limit: int, what: str) -> None:
    total = 0
    with open(target, "wb") as stream:  # noqa: ASYNC230 - each chunk's write is in a thread
        while chunk := await upload.read(2**20):
            total += len(chunk)
            if total > limit:
                raise _too_large(what, limit)
            await run_in_threadpool(stream.write, chunk)
    if total == 0:
        raise UsageError(f"{what} is empty (0 bytes)")


# --------------------------------------------------------------------- health and styles


@api.get("/healthz", summary="Liveness: the server answers, and how busy it is")
async def healthz(request: Request):
    from ..backend import backend

    batcher = server(request).service.batcher
    return {"status": "ok", "backend": backend(), "process": os.getpid(),
            "waiting": batcher.waiting,
            "requests": batcher.stats.requests, "batches": batcher.stats.batches,
            "largest_batch": batcher.stats.largest}


@api.get("/v1/styles", summary="Every registered style")
async def list_styles(request: Request):
    return {"styles": await run_in_threadpool(server(request).service.style_rows)}


@api.get("/v1/styles/{name}/preview", summary="A style's preview image (PNG)")
async def style_preview(request: Request, name: str):
    return _style_file(server(request), name, "preview")


@api.get("/v1/styles/{name}/painting", summary="The painting a style was trained on")
async def style_painting(request: Request, name: str):
    return _style_file(server(request), name, "painting")


def _style_file(state: Server, name: str, which: str) -> FileResponse:
    try:
        return FileResponse(state.service.style_file(name, which),
                            headers={"Cache-Control": "max-age=300"})
    except (KeyError, UsageError):
        raise ApiError(404, f"the style {name!r} has no {which}") from None


@api.post("/v1/styles", status_code=201,
          summary="A painting as a new style (the any-painting network; then listed)")
async def add_style(request: Request,
                    painting: Annotated[UploadFile, File(description="An image file.")],
                    name: Annotated[str, Form(description="The new style's name.")]):
    state = server(request)
    data = await read_upload(painting, state.settings.max_upload, "the painting")
    await run_in_threadpool(state.service.add_painting, data, name, state.settings.max_pixels)
    rows = {row["name"]: row for row in state.service.style_rows()}
    return rows.get(name, {"name": name})


# --------------------------------------------------------------------- one image


@api.post("/v1/stylize", summary="Stylize one image; answers the image",
          response_class=Response,
          responses={200: {"content": {media: {} for _, media in FORMATS.values()}}})
async def stylize(
    request: Request,
    image: Annotated[UploadFile, File(description="A photo (PNG, JPEG, WebP, ...).")],
    style: Annotated[str, Form(description="A style name, or a blend: starry:0.6,wave:0.4"
                               )] = "starry",
    strength: Annotated[float, Form(ge=0, le=1)] = 1.0,
    preserve_color: Annotated[bool, Form()] = False,
    style_size: Annotated[float, Form(description="Stroke size: 2 is twice as large.")] = 1.0,
    max_size: Annotated[int | None, Form(ge=16, le=16384,
                                         description="Downscale the photo first.")] = None,
    format: Annotated[str | None, Form(description="png, jpeg, webp or ppm (default: from "
                                       "Accept, else png).")] = None,
    quality: Annotated[int, Form(ge=1, le=100)] = 90,
):
    return await _stylized(request, lambda limit: read_upload(image, limit, "the image"),
                           StyleOptions(style, strength, preserve_color, style_size), max_size,
                           format, quality)


@api.post("/v1/stylize/raw", summary="Stylize one image sent as the whole request body (no "
          "multipart to parse: the fastest way in); answers the image",
          response_class=Response,
          responses={200: {"content": {media: {} for _, media in FORMATS.values()}}},
          openapi_extra={"requestBody": {"required": True, "content": {
              media: {"schema": {"type": "string", "format": "binary"}}
              for media in ("image/x-portable-pixmap", "image/jpeg", "image/png",
                            "image/webp")}}})
async def stylize_raw(
    request: Request,
    style: Annotated[str, Query(description="A style name, or a blend: starry:0.6,wave:0.4"
                                )] = "starry",
    strength: Annotated[float, Query(ge=0, le=1)] = 1.0,
    preserve_color: bool = False,
    style_size: Annotated[float, Query(description="Stroke size: 2 is twice as large.")] = 1.0,
    max_size: Annotated[int | None, Query(ge=16, le=16384,
                                          description="Downscale the photo first.")] = None,
    format: Annotated[str | None, Query(description="png, jpeg, webp or ppm (default: from "
                                        "Accept, else png).")] = None,
    quality: Annotated[int, Query(ge=1, le=100)] = 90,
):
    return await _stylized(request, lambda limit: read_body(request, limit, "the image"),
                           StyleOptions(style, strength, preserve_color, style_size), max_size,
                           format, quality)


async def _stylized(request: Request, read: Callable[[int], Awaitable[bytes]],
                    options: StyleOptions, max_size: int | None, format: str | None,
                    quality: int) -> Response:
    """One stylize request, whichever way its image came: `read(limit)` gives its bytes. While
    they are read and decoded, a batch being gathered waits for it (`coming`)."""
    state = server(request)
    fmt = pick_format(format, request.headers.get("accept"))
    options = state.service.check(options)
    with state.service.batcher.coming():
        data = await read(state.settings.max_upload)
        clock = [request.state.arrived, time.perf_counter()]
        frame = await run_in_threadpool(decode_frame, data, max_size, state.settings.max_pixels)
        clock.append(time.perf_counter())
        queued = state.service.stylize(frame, options)
    out = await _result(queued)
    clock.append(time.perf_counter())
    if fmt == "ppm":  # sent from the frame's memory as it is
        parts = ppm_parts(out)
    else:
        parts = [await run_in_threadpool(encode_frame, out, fmt, quality)]
    clock.append(time.perf_counter())
    # where the time went, for the client's developer tools and benchmarks/bench_serve.py: the
    # whole request since it arrived, its upload read (and parsed), decoding, the queue and the
    # pass, encoding
    steps = zip(("read", "decode", "stylize", "encode"), clock, clock[1:])
    timing = ", ".join([f"total;dur={1000 * (clock[-1] - request.state.arrived):.2f}",
                        *(f"{name};dur={1000 * (b - a):.2f}" for name, a, b in steps)])
    return _Parts(parts, FORMATS[fmt][1], {"Server-Timing": timing})


async def _result(queued) -> np.ndarray:
    """A stylized frame; a pass that failed is one line: 503 when the device ran out of
    memory (others' passes hold it: try again), else 500."""
    try:
        return await asyncio.wrap_future(queued)
    except (EngineError, ApiError):
        raise
    except Exception as error:
        if "out of memory" in str(error).lower():
            raise ApiError(503, "the GPU is out of memory for now; try again shortly",
                           {"Retry-After": "1"}) from None
        raise ApiError(500, f"the pass failed: {type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else ''}") from None


class _Parts(Response):
    """A response whose body goes out as the given parts (bytes or memoryviews), each as it is:
    a PPM's header, then the frame's memory, with no copy joining them."""

    def __init__(self, parts: list, media_type: str, headers: dict[str, str]):
        self.parts = parts
        super().__init__(None, media_type=media_type,
                         headers={**headers, "content-length": str(sum(map(len, parts)))})

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        for i, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part,
                        "more_body": i + 1 < len(self.parts)})


# --------------------------------------------------------------------- jobs


@api.post("/v1/videos", status_code=202, summary="Stylize a video (a job; audio kept)")
async def stylize_video(
    request: Request,
    video: Annotated[UploadFile, File(description="A video file (.mp4, .mov, .mkv, ...).")],
    style: Annotated[str, Form()] = "starry",
    strength: Annotated[float, Form(ge=0, le=1)] = 1.0,
    preserve_color: Annotated[bool, Form()] = False,
    style_size: Annotated[float, Form()] = 1.0,
    stabilize: Annotated[bool, Form(description="Less flicker.")] = False,
    max_size: Annotated[int | None, Form(ge=16, le=8192)] = None,
):
    state = server(request)
    options = state.service.check(StyleOptions(style, strength, preserve_color, style_size))
    suffix = Path(video.filename or "").suffix.lower()
    suffix = suffix if suffix in VIDEO_SUFFIXES else ".mp4"
    job = state.jobs.new("video")
    try:
        upload = job.folder / f"upload{suffix}"
        await save_upload(video, upload, state.settings.max_video_upload, "the video")
        await run_in_threadpool(_probe, upload)
    except BaseException:
        state.jobs.delete(job.id)
        raise
    job.detail.update(style=options.style)
    state.jobs.start(job, video_work(state.service, options, stabilize, max_size, suffix))
    return job.public()


def _probe(path: Path) -> None:
    from ..io.video import probe

    probe(path)


@api.post("/v1/train", status_code=202,
          summary="Train a style on a painting (a job; this machine's recipe)")
async def train(
    request: Request,
    painting: Annotated[UploadFile, File(description="The painting (an image file).")],
    name: Annotated[str, Form(description="The new style's name.")],
    minutes: Annotated[float | None, Form(gt=0, description="Time budget (default: the "
                                          "recipe's: 10 on a CPU, 5 on a GPU).")] = None,
    steps: Annotated[int | None, Form(ge=1, le=1_000_000,
                                      description="A ceiling on the steps.")] = None,
):
    state = server(request)
    limit = state.settings.max_train_minutes
    if minutes is not None and minutes > limit:
        raise UsageError(f"minutes {minutes:g} is over this server's limit of {limit:g}")
    state.service.check_new_name(name)
    if any(job.kind == "train" and not job.finished and job.detail.get("style") == name
           for job in state.jobs.all()):
        raise UsageError(f"a style named {name!r} is being trained; choose another name")
    data = await read_upload(painting, state.settings.max_upload, "the painting")
    await run_in_threadpool(decode_frame, data, None, state.settings.max_pixels, "the painting")
    suffix = Path(painting.filename or "").suffix.lower()
    suffix = suffix if suffix in PAINTING_SUFFIXES else ".png"
    job = state.jobs.new("train")
    (job.folder / f"upload{suffix}").write_bytes(data)
    job.detail.update(style=name)
    state.jobs.start(job, train_work(state.service, name, minutes, steps, suffix))
    return job.public()


@api.get("/v1/jobs", summary="Every job")
async def list_jobs(request: Request):
    return {"jobs": [job.public() for job in server(request).jobs.all()]}


@api.get("/v1/jobs/{job_id}", summary="A job's state and progress")
async def job_state(request: Request, job_id: str):
    return server(request).job(job_id).public()


@api.get("/v1/jobs/{job_id}/result", summary="A finished video job's video")
async def job_result(request: Request, job_id: str):
    job = server(request).job(job_id)
    if job.state != "done" or job.result is None or not job.result.is_file():
        raise ApiError(409 if not job.finished else 404,
                       f"job {job_id} has no result ({job.state})")
    return FileResponse(job.result, media_type="video/mp4", filename=f"stylized-{job_id}.mp4")


@api.get("/v1/jobs/{job_id}/preview", summary="A train job's latest preview (PNG)")
async def job_preview(request: Request, job_id: str):
    job = server(request).job(job_id)
    folder = job.run_folder
    found = sorted(folder.glob("preview-*.png")) if folder and folder.is_dir() else []
    if job.state == "done" and job.kind == "train":  # the style's own preview
        from ..io.style_files import style_dir

        found += [p for p in [style_dir() / f"{job.detail['style']}.png"] if p.is_file()]
    if not found:
        raise ApiError(404, f"job {job_id} has no preview yet")
    return FileResponse(found[-1], headers={"Cache-Control": "no-store"})


@api.get("/v1/jobs/{job_id}/loss", summary="A train job's loss plot (PNG)")
async def job_loss(request: Request, job_id: str):
    job = server(request).job(job_id)
    plot = job.run_folder / "loss.png" if job.run_folder else None
    if plot is None or not plot.is_file():
        raise ApiError(404, f"job {job_id} has no loss plot yet")
    return FileResponse(plot, headers={"Cache-Control": "no-store"})


@api.delete("/v1/jobs/{job_id}", summary="Stop a job and delete its files")
async def delete_job(request: Request, job_id: str):
    state = server(request)
    state.job(job_id)
    await run_in_threadpool(state.jobs.delete, job_id)
    return {"deleted": job_id}


# --------------------------------------------------------------------- the webcam


@api.websocket("/v1/webcam")
async def webcam(socket: WebSocket):
    """Binary messages: camera frames (JPEG or PNG); text messages: JSON options
    ({"style": ..., "strength": ..., "preserve_color": ..., "style_size": ...}). Each frame is
    answered with its stylized JPEG, or a text message {"error": ...}."""
    if not socket.app.state.allowed(socket):
        await socket.close(code=1008)
        return
    await socket.accept()
    state, options = server(socket), StyleOptions("starry")
    try:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("text") is not None:
                    options = _options(state, options, message["text"])
                    await socket.send_text(json.dumps({"style": options.style}))
                else:
                    await socket.send_bytes(await _frame(state, options,
                                                         message.get("bytes") or b""))
            except (EngineError, ApiError, QueueFull, ValueError, TypeError) as error:
                await socket.send_text(json.dumps({"error": str(error)}))
    except WebSocketDisconnect:
        return


def _options(state: Server, options: StyleOptions, text: str) -> StyleOptions:
    asked = json.loads(text)
    if not isinstance(asked, dict):
        raise UsageError("options must be a JSON object")
    return state.service.check(StyleOptions(
        str(asked.get("style", options.style)), float(asked.get("strength", options.strength)),
        bool(asked.get("preserve_color", options.preserve_color)),
        float(asked.get("style_size", options.style_size))))


async def _frame(state: Server, options: StyleOptions, data: bytes) -> bytes:
    if len(data) > state.settings.max_upload:
        raise UsageError("the frame is too large")
    frame = await run_in_threadpool(decode_frame, data, 1920, state.settings.max_pixels,
                                    "the frame")
    out = await _result(state.service.stylize(frame, options))
    return await run_in_threadpool(encode_frame, out, "jpeg", 85)
