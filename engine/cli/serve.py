"""`engine serve`: the page and the HTTP API (engine/serve/)."""

import ipaddress
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .common import NetChoice, app, err, user_errors


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but this machine "
                                      "(127.0.0.1, ::1, localhost) needs --token.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0: any free port.")] = 8000,
    net: NetChoice = "auto",
    token: Annotated[str | None, typer.Option(
        envvar="ENGINE_TOKEN", help="A secret the API and the page require (Authorization: "
        "Bearer TOKEN; the page takes it once from the address printed).")] = None,
    cors: Annotated[str | None, typer.Option(
        help="Origins allowed to call the API from their pages, comma-separated (default: "
        "none).")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu, or the index of the GPU this server uses (one server per GPU).")] = None,
    content: Annotated[Path | None, typer.Option(
        help="Training photos for train jobs (default: the photos inside scikit-image).")
                       ] = None,
    max_batch: Annotated[int, typer.Option(min=1, max=64, help="Requests in one forward "
                                           "pass at most.")] = 8,
    batch_wait_ms: Annotated[float, typer.Option(
        min=0, max=1000, help="How long a request waits for others of its style and size.")
                             ] = 2.0,
    max_queue: Annotated[int, typer.Option(min=1, help="Requests waiting at most; more are "
                                           "answered 503 with Retry-After.")] = 64,
    max_upload_mb: Annotated[int, typer.Option(min=1, help="Largest image upload.")] = 32,
    max_pixels: Annotated[int, typer.Option(min=4096, help="Largest image, in pixels.")
                          ] = 24_000_000,
    vgg_weights: Annotated[Path | None, typer.Option(envvar="ENGINE_VGG_WEIGHTS",
                                                        help="VGG16 weights for train jobs.")
                           ] = None,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="Server processes sharing the address and the GPU (each with its "
        "styles loaded and its own batches): more serve more clients at once.")] = 1,
) -> None:
    """The engine in a browser and as a service: a page (photos, styles, webcam, video,
    training) and an HTTP API (docs at /docs), styles loaded once, requests batched."""
    with user_errors():
        if device is not None and device != "cpu":
            if not device.isdigit():
                raise UsageError(f"--device {device!r}: give cpu or a GPU index (0, 1, ...)")
            if "mlx.core" in sys.modules:
                raise UsageError("--device must be chosen before MLX starts")
            os.environ["CUDA_VISIBLE_DEVICES"] = device  # this process sees that GPU alone
        local = _is_local(host)
        if not local and not token:
            raise UsageError(f"--host {host} opens the server to other machines; give --token "
                             "SECRET (or ENGINE_TOKEN) too")
        import uvicorn

        from ..serve.app import create_app
        from ..serve.service import ServeSettings

        settings = ServeSettings(
            host=host, port=port, net=net, token=token,
            cors=tuple(o.strip() for o in cors.split(",") if o.strip()) if cors else (),
            max_upload=max_upload_mb * 2**20, max_pixels=max_pixels, max_batch=max_batch,
            batch_wait=batch_wait_ms / 1000, max_queue=max_queue, content=content,
            vgg_weights=vgg_weights, device="cpu" if device == "cpu" else None)
        if content is not None and not content.is_dir():
            raise UsageError(f"--content {content}: not a folder of photos")
        if not local:
            err.print(f"warning: listening on {host}: anyone who can reach this machine and "
                      "has the token can use the server; put TLS in front of it (a reverse "
                      "proxy) on an open network")
        config = {"log_level": "warning", "ws_max_size": settings.max_upload + 2**16}
        if workers > 1:
            from ..serve.workers import run_workers

            run_workers(settings, workers, config, lambda port: _announce(settings, port),
                        err.print)
        else:
            from ..serve.workers import bind

            sock = bind(host, port)
            server = uvicorn.Server(uvicorn.Config(create_app(settings), **config))
            _on_listening(server, lambda port: _announce(settings, port))
            try:  # until Ctrl-C or SIGTERM: requests finished, jobs stopped, files gone
                server.run(sockets=[sock])
            except KeyboardInterrupt:  # (uvicorn hands the signal back once it has shut down)
                pass
        err.print("stopped")
    # Everything is closed by now: requests answered, jobs stopped, the job folder deleted. MLX,
    # used from the server's own thread, can abort in its static destructors at interpreter exit
    # ("terminate called without an active exception"); leave without running them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _announce(settings, port: int) -> None:
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    query = f"/?token={settings.token}" if settings.token else "/"
    err.print(f"engine serve: http://{host}:{port}{query}  (API docs: http://{host}:{port}/docs;"
              " Ctrl-C stops)", highlight=False, soft_wrap=True)


def _on_listening(server, then) -> None:
    """`then(port)` once uvicorn listens (the port --port 0 chose, too)."""
    started = server.startup

    async def startup(sockets=None):
        await started(sockets=sockets)
        for listener in getattr(server, "servers", []):
            for sock in listener.sockets:
                then(sock.getsockname()[1])
                return

    server.startup = startup
