"""`engine serve` under load, as clients see it: a real server process, clients on the same
machine (processes, each with its own connection; the standard library's HTTP client).

    python benchmarks/bench_serve.py [--sizes 512x512,1920x1080] [--clients 1,8,32]
                                     [--requests 64] [--webcam-seconds 10] [--oneshot]
                                     [--codecs jpeg,ppm] [--workers 1,4]

Rows: requests/s and p50/p99 latency per image size, codec and number of concurrent clients
(JPEG in and out, as a page or an app sends them; ppm: raw pixels in and out; -raw: the image as
the request's body instead of a multipart form), the p50 of the time inside the server (its
Server-Timing header: from the request's arrival, its upload read and parsed, to the encoded
answer), the server's batches; the webcam's round trip at 640x480 (a WebSocket client sending
JPEG frames as the page does: one in flight); with --oneshot, one `engine apply photo.jpg` as a
whole process beside them.
"""

import argparse
import http.client
import io
import itertools
import json
import multiprocessing
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import emit, user_environment  # noqa: E402


def start_server(net: str, workers: int = 1) -> tuple[subprocess.Popen, str, int]:
    process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0", "--net",
                                net, "--max-queue", "256", "--workers", str(workers)],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        line = process.stderr.readline()
        found = re.search(r"http://([\d.]+):(\d+)/", line)
        if found:  # (what the server says from now on goes to this program's stderr)
            threading.Thread(target=lambda: sys.stderr.writelines(
                f"engine serve: {line}" for line in process.stderr), daemon=True).start()
            return process, found.group(1), int(found.group(2))
        if not line and process.poll() is not None:
            break
    process.kill()
    raise SystemExit("engine serve did not start")


PHOTO: list[Path] = []  # --photo, else the example photo inside scikit-image


def photo_bytes(width: int, height: int, codec: str = "jpeg") -> bytes:
    from PIL import Image

    if not PHOTO:
        from engine.io import examples

        PHOTO.append(examples.content_photo())
    image = Image.open(PHOTO[0]).convert("RGB").resize((width, height))
    stream = io.BytesIO()
    image.save(stream, format="JPEG", quality=90) if codec == "jpeg" else image.save(
        stream, format="PPM")
    return stream.getvalue()


def multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                 f'filename="photo"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                 + image
                 + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def health(host: str, port: int) -> dict:
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request("GET", "/healthz")
    return json.loads(connection.getresponse().read())


def request_for(codec: str, style: str, width: int, height: int) -> tuple[str, bytes, str]:
    """(path, body, content type) of one stylize request: `jpeg` or `ppm` in and out as a
    multipart form (/v1/stylize), or with `-raw` the image as the body (/v1/stylize/raw)."""
    fmt, raw = codec.removesuffix("-raw"), codec.endswith("-raw")
    image = photo_bytes(width, height, fmt)
    if raw:
        media = "image/jpeg" if fmt == "jpeg" else "image/x-portable-pixmap"
        return f"/v1/stylize/raw?style={style}&format={fmt}", image, media
    return ("/v1/stylize", *multipart({"style": style, "format": fmt}, image))


_SENT: list[tuple[str, bytes, str]] = []  # the request the client processes send (forked)


def _client(host: str, port: int, count: int) -> list[tuple]:
    """One client's `count` requests on its own connection: (start, end, status, Server-Timing
    parts) each, on the machine's clock."""
    path, body, kind = _SENT[0]
    connection = http.client.HTTPConnection(host, port, timeout=600)
    rows = []
    for _ in range(count):
        start = time.time()
        connection.request("POST", path, body, {"Content-Type": kind})
        response = connection.getresponse()
        response.read()
        timing = dict(re.findall(r"(\w+);dur=([\d.]+)", response.getheader("Server-Timing") or ""))
        rows.append((start, time.time(), response.status,
                     {name: float(ms) for name, ms in timing.items()}))
    connection.close()
    return rows


def load(host: str, port: int, request: tuple[str, bytes, str], clients: int, requests: int
         ) -> dict:
    """`requests` requests from `clients` client processes (as separate programs would send
    them: no client shares an interpreter lock with another); latencies and the wall time from
    the first request sent to the last answer."""
    per_client = max(1, requests // clients)
    before = health(host, port)
    _SENT[:] = [request]  # each process has it from the fork: no copy of the body per task
    with ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("fork")) as pool:
        rows = [row for rows in pool.map(_client, [host] * clients, [port] * clients,
                                         [per_client] * clients) for row in rows]
    after = health(host, port)
    wall = max(row[1] for row in rows) - min(row[0] for row in rows)
    latencies = sorted(row[1] - row[0] for row in rows)
    inside = [row[3] for row in rows if row[3]]
    done = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    return {"requests": len(latencies), "errors": sum(row[2] != 200 for row in rows),
            "requests_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 2),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1,
                                                  int(0.99 * len(latencies)))], 2),
            **{f"server_{part}_p50_ms": round(statistics.median(t[part] for t in inside), 2)
               for part in ("total", "read", "decode", "stylize", "encode") if inside},
            # (with several server processes, /healthz answers for one of them)
            **({"mean_batch": round(done / batches, 2)} if done == len(rows) else {})}


def webcam(host: str, port: int, style: str, seconds: float) -> dict:
    from websockets.sync.client import connect

    frame = photo_bytes(640, 480)
    with connect(f"ws://{host}:{port}/v1/webcam", max_size=2**24) as socket:
        socket.send(json.dumps({"style": style}))
        socket.recv()
        for _ in range(3):  # warm-up: the pass compiles on its second call
            socket.send(frame)
            socket.recv()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            socket.send(frame)
            answer = socket.recv()
            assert isinstance(answer, bytes), answer
            count += 1
        wall = time.perf_counter() - start
    return {"frames": count, "frames_per_s": round(count / wall, 2),
            "round_trip_ms": round(1000 * wall / count, 2)}


def oneshot(style: str, width: int, height: int) -> list[float]:
    """Wall seconds of `engine apply` as a whole process, twice (the second with warm caches)."""
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "photo.jpg"
        photo.write_bytes(photo_bytes(width, height))
        seconds = []
        for index in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "engine", "apply", "--style", style,
                            str(photo), "-o", str(Path(folder) / f"out{index}.png")],
                           check=True, capture_output=True, env=user_environment())
            seconds.append(round(time.perf_counter() - start, 2))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512x512,1920x1080")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--style", default="starry")
    parser.add_argument("--net", default="auto")
    parser.add_argument("--workers", default="1",
                        help="comma-separated: server processes (engine serve --workers)")
    parser.add_argument("--webcam-seconds", type=float, default=10.0)
    parser.add_argument("--oneshot", action="store_true")
    parser.add_argument("--photo", type=Path, help="The photo to send (default: the example).")
    parser.add_argument("--codecs", default="jpeg",
                        help="comma-separated: jpeg, ppm (raw pixels), as a multipart form; "
                        "jpeg-raw, ppm-raw: the image as the request body (/v1/stylize/raw)")
    args = parser.parse_args()
    if args.photo:
        PHOTO.append(args.photo)
    import engine  # noqa: F401 - its BLAS before MLX

    for workers in map(int, args.workers.split(",")):
        process, host, port = start_server(args.net, workers)
        try:
            for size, codec in itertools.product(args.sizes.split(","), args.codecs.split(",")):
                width, height = map(int, size.split("x"))
                request = request_for(codec, args.style, width, height)
                load(host, port, request, 8 * workers, 16 * workers)  # each pass compiled
                load(host, port, request, 1, 4)
                for clients in map(int, args.clients.split(",")):
                    requests = max(args.requests, 2 * clients)
                    load(host, port, request, clients, clients)  # this load's batch shapes
                    emit({"what": "serve stylize", "size": size, "codec": codec,
                          "clients": clients, "workers": workers, "style": args.style,
                          "net": args.net, **load(host, port, request, clients, requests)})
            if args.webcam_seconds > 0:
                emit({"what": "serve webcam round trip", "size": "640x480", "workers": workers,
                      "style": args.style, "net": args.net,
                      **webcam(host, port, args.style, args.webcam_seconds)})
        finally:
            process.terminate()
            process.wait(timeout=120)
    if args.oneshot:
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            emit({"what": "one-shot engine apply (whole process)", "size": size,
                  "style": args.style, "seconds": oneshot(args.style, width, height)})


if __name__ == "__main__":
    main()
