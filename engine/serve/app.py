"""The HTTP API and the page (FastAPI): `create_app(settings)`; `engine serve` runs it under
uvicorn. Errors are JSON, {"error": "one line"}, with a 4xx status (503 with Retry-After when
the queue is full)."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..errors import EngineError, ImageError, UsageError
from .batching import QueueFull
from .jobs import JobStore, TooManyJobs, check_train_name, train_work, video_work
from .service import ServeSettings, StyleOptions, StyleService

STATIC = Path(__file__).parent / "static"
COOKIE = "engine_token"
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"),
           "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# --------------------------------------------------------------------- images in and out


def decode_frame(data: bytes, max_size: int | None, max_pixels: int,
                 name: str = "the image") -> np.ndarray:
    """An upload's bytes as uint8 (H, W, 3) RGB (transparency over white), no side above
    max_size. The size is checked from the header first; a whole JPEG (a camera frame, most
    photos) is decoded by OpenCV's libjpeg-turbo (upright per EXIF; 3-4x faster than Pillow
    here), anything else by Pillow."""
    import cv2
    from PIL import Image

    from ..io.images import check_header, decode_image

    if not data:
        raise ImageError(f"{name} is empty (0 bytes); send an image file")
    if check_header(data, name, max_pixels) == "JPEG" and data.rstrip(b"\0").endswith(b"\xff\xd9"):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is not None:
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            height, width = frame.shape[:2]
            if max_size and max(width, height) > max_size:
                scale = max_size / max(width, height)
                frame = cv2.resize(frame, (max(1, round(width * scale)),
                                           max(1, round(height * scale))),
                                   interpolation=cv2.INTER_AREA)
            return frame
    image = decode_image(data, name, max_pixels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, "white")
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if max_size and max(image.size) > max_size:
        scale = max_size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    return np.asarray(image)


def encode_frame(frame: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """JPEG through OpenCV (libjpeg-turbo), PNG and WebP through Pillow."""
    pil_format, _ = FORMATS[fmt]
    if pil_format == "JPEG":
        import cv2

        done, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                     [cv2.IMWRITE_JPEG_QUALITY, quality])
        if done:
            return encoded.tobytes()
    from PIL import Image

    options = {"quality": quality} if pil_format in ("JPEG", "WEBP") else {"compress_level": 1}
    stream = io.BytesIO()
    Image.fromarray(frame).save(stream, format=pil_format, **options)
    return stream.getvalue()


def _format(requested: str | None, accept: str | None) -> str:
    if requested:
        key = requested.lower().strip()
        if key not in FORMATS:
            raise UsageError(f"format {requested!r}: use png, jpeg or webp")
        return key
    for key in ("jpeg", "webp", "png"):  # the first one the client asks for by type
        if accept and FORMATS[key][1] in accept and "image/*" not in accept.split(",")[0]:
            return key
    return "png"


async def _read(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"{what} is over {limit // 2**20} MB; send a smaller file")
    return data


# --------------------------------------------------------------------- the app


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = StyleService(settings)
        state["service"], state["jobs"] = service, JobStore(service)
        service.warm()  # every style loaded on the MLX thread, ahead of its first request
        try:
            yield
        finally:
            state["jobs"].close()
            service.close()

    app = FastAPI(title="engine", version=_version(), lifespan=lifespan,
                  description="Neural style transfer on MLX: the styles, a stylized image per "
                  "request (batched with others of its style and size), videos and training "
                  "as jobs. Errors are JSON: {\"error\": \"...\"}.")
    app.state.engine = state
    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_BodyLimit, limit=max(settings.max_upload, settings.max_video_upload)
                       + 2**20)

    def service() -> StyleService:
        return state["service"]

    def jobs() -> JobStore:
        return state["jobs"]

    # ----------------------------------------------------------------- errors and tokens

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return _error(error.status, error.message, error.headers)

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, error: EngineError):
        status = 413 if "too many pixels" in str(error) else 400
        return _error(status, str(error))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull):
        return _error(503, f"the server is busy ({error}); try again in a second",
                      {"Retry-After": "1"})

    @app.exception_handler(TooManyJobs)
    async def too_many_jobs(request: Request, error: TooManyJobs):
        return _error(503, str(error), {"Retry-After": "10"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the request"
        reason = ("is missing" if first.get("type") == "missing"
                  else f"is not valid ({first.get('msg', 'invalid')})")
        return _error(422, f"{where} {reason}; see /docs")

    def allowed(request: Request | WebSocket) -> bool:
        if not settings.token:
            return True
        given = request.cookies.get(COOKIE) or ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        return secrets.compare_digest(given.encode(), settings.token.encode())

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        request.state.arrived = time.perf_counter()
        path = request.url.path
        if (settings.token and path != "/" and path != "/healthz"
                and not path.startswith("/static/") and not allowed(request)):
            return _error(401, "this server needs its token: send 'Authorization: Bearer "
                          "TOKEN', or open the page at the address the server printed")
        return await call_next(request)

    # ----------------------------------------------------------------- the page

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page(request: Request, token: str | None = None):
        if settings.token:
            if token is not None:
                if not secrets.compare_digest(token.encode(), settings.token.encode()):
                    return HTMLResponse("<p>Wrong token.</p>", status_code=401)
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return response
            if not allowed(request):
                return HTMLResponse("<p>This server needs its token: open the address "
                                    "<code>engine serve</code> printed (it ends in "
                                    "<code>?token=...</code>).</p>", status_code=401)
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # ----------------------------------------------------------------- the API

    @app.get("/healthz", summary="Liveness: the server answers, and how busy it is")
    async def healthz():
        from ..backend import backend

        batcher = service().batcher
        return {"status": "ok", "backend": backend(), "waiting": batcher.waiting,
                "requests": batcher.stats.requests, "batches": batcher.stats.batches,
                "largest_batch": batcher.stats.largest}

    @app.get("/v1/styles", summary="Every registered style")
    async def list_styles():
        return {"styles": await run_in_threadpool(service().style_rows)}

    @app.get("/v1/styles/{name}/preview", summary="A style's preview image (PNG)")
    async def style_preview(name: str):
        return _style_file(name, "preview")

    @app.get("/v1/styles/{name}/painting", summary="The painting a style was trained on")
    async def style_painting(name: str):
        return _style_file(name, "painting")

    def _style_file(name: str, which: str):
        try:
            return FileResponse(service().style_file(name, which),
                                headers={"Cache-Control": "max-age=300"})
        except (KeyError, UsageError):
            raise ApiError(404, f"the style {name!r} has no {which}") from None

    @app.post("/v1/styles", status_code=201,
              summary="A painting as a new style (the any-painting network; then listed)")
    async def add_style(painting: Annotated[UploadFile, File(description="An image file.")],
                        name: Annotated[str, Form(description="The new style's name.")]):
        data = await _read(painting, settings.max_upload, "the painting")
        check_train_name(service(), name)
        await run_in_threadpool(service().add_painting, data, name, settings.max_pixels)
        rows = {row["name"]: row for row in service().style_rows()}
        return rows.get(name, {"name": name})

    @app.post("/v1/stylize", summary="Stylize one image; answers the image",
              response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    async def stylize(
        request: Request,
        image: Annotated[UploadFile, File(description="A photo (PNG, JPEG, WebP, ...).")],
        style: Annotated[str, Form(description="A style name, or a blend: starry:0.6,wave:0.4"
                                   )] = "starry",
        strength: Annotated[float, Form(ge=0, le=1)] = 1.0,
        preserve_color: Annotated[bool, Form()] = False,
        style_size: Annotated[float, Form(description="Stroke size: 2 is twice as large."
                                          )] = 1.0,
        max_size: Annotated[int | None, Form(ge=16, le=16384,
                                             description="Downscale the photo first.")] = None,
        format: Annotated[str | None, Form(description="png, jpeg or webp (default: from "
                                           "Accept, else png).")] = None,
        quality: Annotated[int, Form(ge=1, le=100)] = 90,
    ):
        fmt = _format(format, request.headers.get("accept"))
        options = service().check(StyleOptions(style, strength, preserve_color, style_size))
        data = await _read(image, settings.max_upload, "the image")
        clock = [time.perf_counter()]
        frame = await run_in_threadpool(decode_frame, data, max_size, settings.max_pixels)
        clock.append(time.perf_counter())
        out = await asyncio.wrap_future(service().stylize(frame, options))
        clock.append(time.perf_counter())
        body = await run_in_threadpool(encode_frame, out, fmt, quality)
        clock.append(time.perf_counter())
        # where the time went, for the client's developer tools and benchmarks/bench_serve.py:
        # the whole request since it arrived (its upload read and parsed too), decoding, the
        # queue and the pass, encoding
        parts = zip(("decode", "stylize", "encode"), clock, clock[1:])
        timing = ", ".join([f"total;dur={1000 * (clock[-1] - request.state.arrived):.2f}",
                            *(f"{name};dur={1000 * (b - a):.2f}" for name, a, b in parts)])
        return Response(body, media_type=FORMATS[fmt][1], headers={"Server-Timing": timing})

    @app.post("/v1/videos", status_code=202, summary="Stylize a video (a job; audio kept)")
    async def stylize_video(
        video: Annotated[UploadFile, File(description="A video file (.mp4, .mov, .mkv, ...).")],
        style: Annotated[str, Form()] = "starry",
        strength: Annotated[float, Form(ge=0, le=1)] = 1.0,
        preserve_color: Annotated[bool, Form()] = False,
        style_size: Annotated[float, Form()] = 1.0,
        stabilize: Annotated[bool, Form(description="Less flicker.")] = False,
        max_size: Annotated[int | None, Form(ge=16, le=8192)] = None,
    ):
        options = service().check(StyleOptions(style, strength, preserve_color, style_size))
        suffix = Path(video.filename or "").suffix.lower()
        suffix = suffix if suffix in VIDEO_SUFFIXES else ".mp4"
        job = jobs().new("video")
        try:
            await _save(video, job.folder / f"upload{suffix}", settings.max_video_upload,
                        "the video")
            await run_in_threadpool(_probe, job.folder / f"upload{suffix}")
        except BaseException:
            jobs().delete(job.id)
            raise
        job.detail.update(style=options.style)
        jobs().start(job, video_work(service(), options, stabilize, max_size, suffix))
        return job.public()

    @app.post("/v1/train", status_code=202,
              summary="Train a style on a painting (a job; this machine's recipe)")
    async def train(
        painting: Annotated[UploadFile, File(description="The painting (an image file).")],
        name: Annotated[str, Form(description="The new style's name.")],
        minutes: Annotated[float | None, Form(gt=0, description="Time budget (default: the "
                                              "recipe's: 10 on a CPU, 5 on a GPU).")] = None,
        steps: Annotated[int | None, Form(ge=1, le=1_000_000,
                                          description="A ceiling on the steps.")] = None,
    ):
        if minutes is not None and minutes > settings.max_train_minutes:
            raise UsageError(f"minutes {minutes:g} is over this server's limit of "
                             f"{settings.max_train_minutes:g}")
        check_train_name(service(), name)
        if any(job.kind == "train" and not job.finished and job.detail.get("style") == name
               for job in jobs().jobs.values()):
            raise UsageError(f"a style named {name!r} is being trained; choose another name")
        data = await _read(painting, settings.max_upload, "the painting")
        await run_in_threadpool(decode_frame, data, None, settings.max_pixels, "the painting")
        suffix = Path(painting.filename or "").suffix.lower()
        suffix = suffix if suffix in {".jpg", ".jpeg", ".png", ".webp"} else ".png"
        job = jobs().new("train")
        (job.folder / f"upload{suffix}").write_bytes(data)
        job.detail.update(style=name)
        jobs().start(job, train_work(service(), name, minutes, steps, suffix))
        return job.public()

    @app.get("/v1/jobs", summary="Every job")
    async def list_jobs():
        return {"jobs": [job.public() for job in jobs().jobs.values()]}

    @app.get("/v1/jobs/{job_id}", summary="A job's state and progress")
    async def job_state(job_id: str):
        return _job(job_id).public()

    @app.get("/v1/jobs/{job_id}/result", summary="A finished video job's video")
    async def job_result(job_id: str):
        job = _job(job_id)
        if job.state != "done" or job.result is None or not job.result.is_file():
            raise ApiError(409 if not job.finished else 404,
                           f"job {job_id} has no result ({job.state})")
        return FileResponse(job.result, media_type="video/mp4",
                            filename=f"stylized-{job_id}.mp4")

    @app.get("/v1/jobs/{job_id}/preview", summary="A train job's latest preview (PNG)")
    async def job_preview(job_id: str):
        job = _job(job_id)
        folder = job.run_folder
        found = sorted(folder.glob("preview-*.png")) if folder and folder.is_dir() else []
        if job.state == "done" and job.kind == "train":  # the style's own preview
            from ..io.style_files import style_dir

            found += [p for p in [style_dir() / f"{job.detail['style']}.png"] if p.is_file()]
        if not found:
            raise ApiError(404, f"job {job_id} has no preview yet")
        return FileResponse(found[-1], headers={"Cache-Control": "no-store"})

    @app.get("/v1/jobs/{job_id}/loss", summary="A train job's loss plot (PNG)")
    async def job_loss(job_id: str):
        job = _job(job_id)
        plot = job.run_folder / "loss.png" if job.run_folder else None
        if plot is None or not plot.is_file():
            raise ApiError(404, f"job {job_id} has no loss plot yet")
        return FileResponse(plot, headers={"Cache-Control": "no-store"})

    @app.delete("/v1/jobs/{job_id}", summary="Stop a job and delete its files")
    async def delete_job(job_id: str):
        _job(job_id)
        await run_in_threadpool(jobs().delete, job_id)
        return {"deleted": job_id}

    def _job(job_id: str):
        try:
            return jobs().get(job_id)
        except KeyError:
            raise ApiError(404, f"no job {job_id!r}") from None

    # ----------------------------------------------------------------- the webcam

    @app.websocket("/v1/webcam")
    async def webcam(socket: WebSocket):
        """Binary messages: camera frames (JPEG or PNG); text messages: JSON options
        ({"style": ..., "strength": ..., "preserve_color": ..., "style_size": ...}). Each frame
        is answered with its stylized JPEG, or a text message {"error": ...}."""
        if not allowed(socket):
            await socket.close(code=1008)
            return
        await socket.accept()
        options = StyleOptions("starry")
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    if message.get("text") is not None:
                        asked = json.loads(message["text"])
                        if not isinstance(asked, dict):
                            raise UsageError("options must be a JSON object")
                        options = service().check(StyleOptions(
                            str(asked.get("style", options.style)),
                            float(asked.get("strength", options.strength)),
                            bool(asked.get("preserve_color", options.preserve_color)),
                            float(asked.get("style_size", options.style_size))))
                        await socket.send_text(json.dumps({"style": options.style}))
                        continue
                    data = message.get("bytes") or b""
                    if len(data) > settings.max_upload:
                        raise UsageError("the frame is too large")
                    frame = await run_in_threadpool(decode_frame, data, 1920,
                                                    settings.max_pixels, "the frame")
                    out = await asyncio.wrap_future(service().stylize(frame, options))
                    await socket.send_bytes(await run_in_threadpool(encode_frame, out, "jpeg",
                                                                    85))
                except (EngineError, QueueFull, ValueError, TypeError) as error:
                    await socket.send_text(json.dumps({"error": str(error)}))
        except WebSocketDisconnect:
            return

    return app


async def _save(upload: UploadFile, target: Path, limit: int, what: str) -> None:
    total = 0
    with open(target, "wb") as stream:
        while chunk := await upload.read(2**20):
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"{what} is over {limit // 2**20} MB; send a smaller file")
            await run_in_threadpool(stream.write, chunk)
    if total == 0:
        raise UsageError(f"{what} is empty (0 bytes)")


def _probe(path: Path) -> None:
    from ..io.video import probe

    probe(path)


def _version() -> str:
    from .. import __version__

    return __version__


class _BodyLimit:
    """Refuses a request body larger than `limit` bytes (413) from its Content-Length, before
    it is read, and stops reading one without that header when it passes the limit."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = _error(413, f"the request is over {self.limit // 2**20} MB; send a "
                              "smaller file")
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, "the request is too large")
            return message

        return await self.app(scope, counted, send)
