"""The app (FastAPI): `create_app(settings)`; `engine serve` runs it under uvicorn. The routes
are in routes.py, images in and out in codec.py. Errors are JSON, {"error": "one line"}, with a
4xx status (503 with Retry-After when the queue or the job store is full)."""

from __future__ import annotations

import secrets
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from ..errors import EngineError
from .batching import QueueFull
from .jobs import JobStore, TooManyJobs
from .routes import ApiError, Server, api
from .service import ServeSettings, StyleService

STATIC = Path(__file__).parent / "static"
COOKIE = "engine_token"
PUBLIC = ("/", "/healthz")  # and /static/: the page's files (the page itself checks the token)


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The MLX thread gives up the interpreter lock while a pass runs and must take it back
        # from a busy event loop, which hands it over every switch interval (5 ms by default):
        # under load that wait, not the GPU, set the pace of the batches.
        sys.setswitchinterval(0.0005)
        service = StyleService(settings)
        app.state.server = Server(settings, service, JobStore(service))
        service.warm()  # every style loaded on the MLX thread, ahead of its first request
        try:
            yield
        finally:
            app.state.server.jobs.close()
            service.close()

    from .. import __version__

    app = FastAPI(title="engine", version=__version__, lifespan=lifespan,
                  description="Neural style transfer on MLX: the styles, a stylized image per "
                  "request (batched with others of its style and size), videos and training "
                  "as jobs. Errors are JSON: {\"error\": \"...\"}.")
    app.state.settings = settings
    app.state.allowed = lambda request: _allowed(settings, request)
    for error, handler in ((ApiError, _api_error), (EngineError, _engine_error),
                           (QueueFull, _queue_full), (TooManyJobs, _too_many_jobs),
                           (RequestValidationError, _invalid)):
        app.add_exception_handler(error, handler)
    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_BodyLimit, limit=max(settings.max_upload, settings.max_video_upload)
                       + 2**20)
    app.add_middleware(_TokenCheck)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/", _page, include_in_schema=False)
    app.include_router(api)
    return app


# --------------------------------------------------------------------- tokens and the page


def _allowed(settings: ServeSettings, request: Request | WebSocket) -> bool:
    """No token set, or the request carries it (Bearer header, or the page's cookie)."""
    if not settings.token:
        return True
    given = request.cookies.get(COOKIE) or ""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        given = header[7:].strip()
    return secrets.compare_digest(given.encode(), settings.token.encode())


class _TokenCheck:
    """Stamps each request's arrival (the Server-Timing total counts from it) and answers 401 to
    one without the token. Plain ASGI: a request's body passes through untouched, chunk by
    chunk, with no wrapper around its stream."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["arrived"] = time.perf_counter()
        request = Request(scope)
        path = request.url.path
        settings = request.app.state.settings
        if (settings.token and path not in PUBLIC and not path.startswith("/static/")
                and not request.app.state.allowed(request)):
            response = _error(401, "this server needs its token: send 'Authorization: Bearer "
                              "TOKEN', or open the page at the address the server printed")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


async def _page(request: Request, token: str | None = None):
    """The page; with a token set, the printed address (`/?token=...`) leaves it in a cookie."""
    settings = request.app.state.settings
    if settings.token:
        if token is not None:
            if not secrets.compare_digest(token.encode(), settings.token.encode()):
                return HTMLResponse("<p>Wrong token.</p>", status_code=401)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        if not request.app.state.allowed(request):
            return HTMLResponse("<p>This server needs its token: open the address "
                                "<code>engine serve</code> printed (it ends in "
                                "<code>?token=...</code>).</p>", status_code=401)
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------- errors as JSON


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _api_error(request: Request, error: ApiError):
    return _error(error.status, error.message, error.headers)


async def _engine_error(request: Request, error: EngineError):
    return _error(413 if "too many pixels" in str(error) else 400, str(error))


async def _queue_full(request: Request, error: QueueFull):
    return _error(503, f"the server is busy ({error}); try again in a second",
                  {"Retry-After": "1"})


async def _too_many_jobs(request: Request, error: TooManyJobs):
    return _error(503, str(error), {"Retry-After": "10"})


async def _invalid(request: Request, error: RequestValidationError):
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the request"
    reason = ("is missing" if first.get("type") == "missing"
              else f"is not valid ({first.get('msg', 'invalid')})")
    return _error(422, f"{where} {reason}; see /docs")


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
