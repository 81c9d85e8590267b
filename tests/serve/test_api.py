"""The HTTP API of `engine serve`, through FastAPI's test client (the app's lifespan included):
the shipped styles on real photos, bad uploads, batching, the queue's limit, the webcam's
WebSocket, the token, and video, painting and training jobs."""

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from engine.io import examples
from engine.serve.app import create_app
from engine.serve.batching import Batcher
from engine.serve.service import ServeSettings

from ..io.test_video import frames_of, make_clip


def photo_bytes(size=(160, 120), fmt="PNG") -> bytes:
    """A real photo (the shipped example), resized."""
    image = Image.open(examples.content_photo()).convert("RGB").resize(size)
    stream = io.BytesIO()
    image.save(stream, format=fmt)
    return stream.getvalue()


def decoded(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float32)


@pytest.fixture
def serve():
    """A started app for the given settings: `with serve(**settings) as client`."""
    def start(**settings):
        return TestClient(create_app(ServeSettings(**settings)))
    return start


def test_styles_are_listed_with_their_previews(serve):
    with serve() as client:
        rows = client.get("/v1/styles").json()["styles"]
        names = {row["name"] for row in rows}
        assert {"starry_night", "wave", "scream"} <= names
        starry = next(row for row in rows if row["name"] == "starry_night")
        assert "starry" in starry["aliases"] and starry["preview"] and starry["painting"]
        preview = client.get(starry["preview"])
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(preview.content)).size[0] > 16
        assert client.get("/v1/styles/nope/preview").status_code == 404
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["backend"] == "cpu"
        schema = client.get("/openapi.json").json()
        assert {"/v1/stylize", "/v1/styles", "/v1/videos", "/v1/train", "/healthz"} <= set(
            schema["paths"])
        assert client.get("/docs").status_code == 200


def test_stylize_answers_the_image_in_the_style(serve):
    data = photo_bytes((200, 150))
    with serve() as client:
        wave = client.post("/v1/stylize", files={"image": ("cat.png", data)},
                           data={"style": "wave"})
        assert wave.status_code == 200 and wave.headers["content-type"] == "image/png"
        out = decoded(wave)
        original = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32)
        assert out.shape == original.shape
        assert np.abs(out - original).mean() > 20  # repainted, not the photo
        scream = decoded(client.post("/v1/stylize", files={"image": ("c.png", data)},
                                     data={"style": "scream"}))
        assert np.abs(scream - out).mean() > 10  # another style, another picture
        light = decoded(client.post("/v1/stylize", files={"image": ("c.png", data)},
                                    data={"style": "wave", "strength": "0.3"}))
        assert np.abs(light - original).mean() < np.abs(out - original).mean() / 2
        small = client.post("/v1/stylize", files={"image": ("c.jpg", photo_bytes(fmt="JPEG"))},
                            data={"style": "starry:0.5,wave:0.5", "max_size": "64",
                                  "format": "jpeg"})
        assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(small.content)).size == (64, 48)
        by_accept = client.post("/v1/stylize", files={"image": ("c.png", data)},
                                headers={"Accept": "image/jpeg"})
        assert by_accept.headers["content-type"] == "image/jpeg"


def ppm(frame: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(frame).save(stream, format="PPM")  # Pillow's writer, not the server's
    return stream.getvalue()


def test_raw_pixels_in_and_out_as_ppm(serve):
    """A binary PPM (raw pixels behind a short header) goes in and comes out: the same picture
    as the PNG path gives, with no codec in between."""
    data = photo_bytes((120, 90))
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    with serve() as client:
        as_png = decoded(client.post("/v1/stylize", files={"image": ("c.png", data)},
                                     data={"style": "wave"}))
        answer = client.post("/v1/stylize", files={"image": ("c.ppm", ppm(pixels))},
                             data={"style": "wave", "format": "ppm"})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "image/x-portable-pixmap"
        assert answer.content.startswith(b"P6\n120 90\n255\n")
        out = np.asarray(Image.open(io.BytesIO(answer.content)), dtype=np.float32)
        assert out.shape == (90, 120, 3) and np.abs(out - as_png).max() == 0
        commented = b"P6\n# from a camera\n120 90\n255\n" + pixels.tobytes()
        smaller = client.post("/v1/stylize", files={"image": ("c.ppm", commented)},
                              data={"style": "wave", "max_size": "60", "format": "ppm"})
        assert Image.open(io.BytesIO(smaller.content)).size == (60, 45)
        header = b"P6\n120 90\n255\n"
        for bad, status, words in [
                (header + pixels.tobytes()[:-1], 400, "send the whole file"),
                (b"P6\n120 90\n65535\n" + pixels.tobytes() * 2, 400, "8-bit"),
                (b"P6\n120\n", 400, "width, height and 255"),
                (b"P6\n40000 30000\n255\n", 413, "too many pixels")]:
            response = client.post("/v1/stylize", files={"image": ("x.ppm", bad)})
            assert response.status_code == status, (words, response.text)
            assert words in response.json()["error"]


def test_an_image_sent_as_the_body_is_the_forms_picture(serve):
    """/v1/stylize/raw: the image is the request's body, options in the query; the same
    picture as the multipart form gives, and the same refusals."""
    data = photo_bytes((120, 90))
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    with serve(max_upload=2**20) as client:
        form = client.post("/v1/stylize", files={"image": ("c.png", data)},
                           data={"style": "wave", "strength": "0.7", "format": "ppm"})
        raw = client.post("/v1/stylize/raw?style=wave&strength=0.7&format=ppm",
                          content=ppm(pixels),
                          headers={"Content-Type": "image/x-portable-pixmap"})
        assert raw.status_code == 200 and raw.content == form.content
        assert "decode;dur=" in raw.headers["server-timing"]
        png = client.post("/v1/stylize/raw?style=wave&strength=0.7", content=data)
        assert np.abs(decoded(png) - decoded(form)).max() == 0
        for query, body, status, words in [
                ("style=wave", b"", 400, "empty"),
                ("style=wave", b"not an image", 400, "not an image"),
                ("style=wave", b"\0" * (2**20 + 10), 413, "over 1 MB"),
                ("style=no_such", data, 400, "unknown style"),
                ("style=/etc/passwd", data, 400, "registered style"),
                ("strength=3", data, 422, "strength"),
                ("format=gif", data, 400, "format")]:
            response = client.post(f"/v1/stylize/raw?{query}", content=body)
            assert response.status_code == status, (words, response.text)
            assert words in response.json()["error"]
        assert "/v1/stylize/raw" in client.get("/openapi.json").json()["paths"]


def test_a_batch_waits_for_requests_on_their_way_only():
    """A lone request runs at once, however long the batch wait; one announced by coming()
    (its upload still being read) is waited for and shares the pass."""
    batches = []
    batcher = Batcher(lambda key, frames: batches.append(len(frames)) or frames,
                      wait=3600.0)
    try:
        frame = np.zeros((4, 4, 3), np.uint8)
        assert batcher.submit("k", frame).result(timeout=60).shape == (4, 4, 3)
        with batcher.coming():
            first = batcher.submit("k", frame)
            time.sleep(0.05)  # the worker holds `first` for the one on its way
            assert not first.done()
            second = batcher.submit("k", frame)
        first.result(timeout=60), second.result(timeout=60)
        assert batches == [1, 2]
    finally:
        batcher.close()


def test_a_jpeg_comes_upright_per_its_exif(serve):
    image = Image.open(io.BytesIO(photo_bytes((80, 60)))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show it rotated 90 degrees clockwise
    stream = io.BytesIO()
    image.save(stream, format="JPEG", exif=exif.tobytes())
    with serve() as client:
        out = client.post("/v1/stylize", files={"image": ("r.jpg", stream.getvalue())})
        assert Image.open(io.BytesIO(out.content)).size == (60, 80)


def test_bad_uploads_are_one_json_line_and_the_server_goes_on(serve):
    def bomb() -> bytes:  # 1-bit pixels: 36 megapixels in a few kilobytes
        stream = io.BytesIO()
        Image.new("1", (6000, 6000)).save(stream, format="PNG")
        return stream.getvalue()

    good, jpeg = photo_bytes((64, 48)), photo_bytes((64, 48), fmt="JPEG")
    with serve(max_pixels=20_000_000, max_upload=2**20) as client:
        cases = [
            ({"image": ("x.png", b"not an image at all")}, {}, 400, "not an image"),
            ({"image": ("x.png", good[: len(good) // 2])}, {}, 400, "truncated"),
            ({"image": ("x.jpg", jpeg[: len(jpeg) // 2])}, {}, 400, "truncated"),
            ({"image": ("x.png", b"")}, {}, 400, "empty"),
            ({"image": ("b.png", bomb())}, {}, 413, "too many pixels"),
            ({"image": ("big.png", b"\0" * (2**20 + 10))}, {}, 413, "over 1 MB"),
            ({"other": ("x.png", good)}, {}, 422, "image is missing"),
            ({"image": ("x.png", good)}, {"style": "no_such"}, 400, "unknown style"),
            ({"image": ("x.png", good)}, {"style": "/etc/passwd"}, 400, "registered style"),
            ({"image": ("x.png", good)}, {"style": "weights/wave.safetensors"}, 400,
             "registered style"),
            ({"image": ("x.png", good)}, {"style": "wave:x"}, 400, "not a number"),
            ({"image": ("x.png", good)}, {"style": "wave:0,scream:0"}, 400, "sum to zero"),
            ({"image": ("x.png", good)}, {"strength": "2"}, 422, "strength"),
            ({"image": ("x.png", good)}, {"style_size": "100"}, 400, "style_size"),
            ({"image": ("x.png", good)}, {"format": "gif"}, 400, "format"),
        ]
        for files, data, status, words in cases:
            response = client.post("/v1/stylize", files=files, data=data)
            assert response.status_code == status, (words, response.text)
            assert response.headers["content-type"] == "application/json"
            message = response.json()["error"]
            assert words in message and "\n" not in message and "Traceback" not in message
        assert client.post("/v1/stylize", files={"image": ("x.png", good)}).status_code == 200


def test_32_concurrent_requests_are_answered_and_share_passes(serve):
    data = photo_bytes((96, 64))
    with serve(batch_wait=0.05, max_batch=8) as client:
        alone = decoded(client.post("/v1/stylize", files={"image": ("a.png", data)},
                                    data={"style": "wave"}))
        before = client.get("/healthz").json()

        def one(_):
            return client.post("/v1/stylize", files={"image": ("a.png", data)},
                               data={"style": "wave"})

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(one, range(32)))
        after = client.get("/healthz").json()
    assert [a.status_code for a in answers] == [200] * 32
    for answer in answers:  # a batch computes each image as a pass of its own would
        assert np.abs(decoded(answer) - alone).max() <= 2
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == 32 and batches < 32 and after["largest_batch"] > 1


def test_a_full_queue_answers_503_with_retry_after(serve):
    data = photo_bytes((64, 48))
    with serve(max_queue=2, batch_wait=0) as client:
        service = client.app.state.server.service
        release = threading.Event()
        service.batcher.call(release.wait)  # the MLX thread busy: requests wait in the queue
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(client.post, "/v1/stylize",
                                   files={"image": ("a.png", data)}) for _ in range(2)]
            deadline = time.time() + 30
            while service.batcher.waiting < 2 and time.time() < deadline:
                time.sleep(0.01)
            refused = client.post("/v1/stylize", files={"image": ("a.png", data)})
            release.set()
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert "busy" in refused.json()["error"]
            assert [w.result().status_code for w in waiting] == [200, 200]
        assert client.post("/v1/stylize", files={"image": ("a.png", data)}).status_code == 200


def test_the_webcam_socket_answers_each_frame_and_switches_style(serve):
    frame = photo_bytes((80, 60), fmt="JPEG")
    with serve() as client, client.websocket_connect("/v1/webcam") as socket:
        socket.send_text(json.dumps({"style": "wave"}))
        assert json.loads(socket.receive_text()) == {"style": "wave"}
        socket.send_bytes(frame)
        wave = np.asarray(Image.open(io.BytesIO(socket.receive_bytes())), dtype=np.float32)
        assert wave.shape == (60, 80, 3)
        socket.send_text(json.dumps({"style": "no_such"}))
        assert "unknown style" in json.loads(socket.receive_text())["error"]
        socket.send_bytes(b"garbage")
        assert "not an image" in json.loads(socket.receive_text())["error"]
        socket.send_text(json.dumps({"style": "scream"}))
        socket.receive_text()
        socket.send_bytes(frame)
        scream = np.asarray(Image.open(io.BytesIO(socket.receive_bytes())), dtype=np.float32)
        assert np.abs(scream - wave).mean() > 10


def test_a_token_guards_the_api_the_page_and_the_socket(serve):
    with serve(token="s3cret") as client:
        assert client.get("/healthz").status_code == 200  # for load balancers
        refused = client.get("/v1/styles")
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        assert client.get("/v1/styles", headers={"Authorization": "Bearer wrong"}
                          ).status_code == 401
        assert client.get("/v1/styles", headers={"Authorization": "Bearer s3cret"}
                          ).status_code == 200
        assert client.get("/").status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(
                "/v1/webcam") as socket:
            socket.receive_text()
        assert closed.value.code == 1008  # policy violation: no token
        entered = client.get("/?token=s3cret")  # the printed address: a cookie, then the page
        assert entered.status_code == 200 and "engine" in entered.text
        assert client.get("/v1/styles").status_code == 200  # the cookie from now on
        with client.websocket_connect("/v1/webcam") as socket:
            socket.send_text(json.dumps({"style": "wave"}))
            assert json.loads(socket.receive_text()) == {"style": "wave"}


def test_cors_is_closed_unless_asked_for(serve):
    asked = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    with serve() as client:
        answer = client.options("/v1/stylize", headers=asked)
        assert "access-control-allow-origin" not in answer.headers
    with serve(cors=("https://example.org",)) as client:
        answer = client.options("/v1/stylize", headers=asked)
        assert answer.headers["access-control-allow-origin"] == "https://example.org"


def wait_for(client, job: dict, timeout=180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job['id']}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job still {job['state']} after {timeout} s")


def test_a_video_job_comes_back_stylized_with_its_audio(serve, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=10, size=(64, 48), rate=Fraction(25),
                     audio=True)
    with serve() as client:
        service = client.app.state.server.service
        started = client.post("/v1/videos", files={"video": ("clip.mp4", clip.read_bytes())},
                              data={"style": "wave"})
        assert started.status_code == 202, started.text
        job = wait_for(client, started.json())
        assert job["state"] == "done", job
        assert job["frames"] == 10 and job["audio"] and job["progress"] == 1.0
        folder = client.app.state.server.jobs.get(job["id"]).folder
        assert not list(folder.glob("upload*"))  # the upload is gone once the job ends
        result = client.get(job["result"])
        assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
        out = tmp_path / "out.mp4"
        out.write_bytes(result.content)
        with av.open(str(out)) as container:
            assert len(container.streams.audio) == 1
        frames = frames_of(out)
        assert len(frames) == 10
        assert np.abs(np.float32(frames[0]) - frames_of(clip)[0]).mean() > 10
        assert service.batcher.stats.requests >= 10  # its frames went through the queue
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200
        assert not folder.exists()
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
        bad = client.post("/v1/videos", files={"video": ("x.mp4", b"not a video")})
        assert bad.status_code == 400 and "\n" not in bad.json()["error"]
        assert client.get("/v1/jobs").json()["jobs"] == []  # the refused upload left nothing
        root = client.app.state.server.jobs.root
        assert oct(root.stat().st_mode & 0o777) == "0o700"
    assert not root.exists()  # the job folder goes with the server


def test_a_painting_uploaded_becomes_a_listed_usable_style(serve):
    painting = Image.open(Path(examples.__file__).parents[2] / "weights" / "paintings" /
                          "wave.jpg").convert("RGB")
    stream = io.BytesIO()
    painting.save(stream, format="JPEG")
    with serve() as client:
        added = client.post("/v1/styles", files={"painting": ("p.jpg", stream.getvalue())},
                            data={"name": "my_wave"})
        assert added.status_code == 201, added.text
        row = added.json()
        assert row["name"] == "my_wave" and row["user"] and row["from_painting"]
        assert client.get(row["preview"]).status_code == 200
        out = client.post("/v1/stylize", files={"image": ("c.png", photo_bytes())},
                          data={"style": "my_wave"})
        assert out.status_code == 200
        again = client.post("/v1/styles", files={"painting": ("p.jpg", stream.getvalue())},
                            data={"name": "my_wave"})
        assert again.status_code == 400 and "exists" in again.json()["error"]
        for name in ("../x", "a/b", ".hidden", ""):
            refused = client.post("/v1/styles", files={"painting": ("p.jpg", b"x")},
                                  data={"name": name})
            assert refused.status_code in (400, 422), name


def test_a_train_job_trains_a_style_that_is_then_listed(serve, tiny_vgg_file):
    painting = photo_bytes((96, 96))
    with serve(vgg_weights=tiny_vgg_file) as client:
        started = client.post("/v1/train", files={"painting": ("p.png", painting)},
                              data={"name": "served", "steps": "3"})
        assert started.status_code == 202, started.text
        assert started.json()["kind"] == "train"
        job = wait_for(client, started.json(), timeout=300)
        assert job["state"] == "done", job
        assert job["step"] == 3 and job["style"] == "served"
        assert client.get(job["loss_plot"]).status_code == 200
        assert client.get(job["preview"]).status_code == 200
        names = {row["name"] for row in client.get("/v1/styles").json()["styles"]}
        assert "served" in names
        assert client.post("/v1/stylize", files={"image": ("c.png", photo_bytes())},
                           data={"style": "served"}).status_code == 200
        taken = client.post("/v1/train", files={"painting": ("p.png", painting)},
                            data={"name": "wave"})
        assert taken.status_code == 400 and "exists" in taken.json()["error"]
        long = client.post("/v1/train", files={"painting": ("p.png", painting)},
                           data={"name": "x", "minutes": "1000"})
        assert long.status_code == 400 and "limit" in long.json()["error"]


def test_finished_jobs_make_room_for_new_ones_and_running_ones_refuse(serve, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=4, size=(32, 32)).read_bytes()
    with serve(max_jobs=2) as client:
        first = wait_for(client, client.post("/v1/videos", files={"video": ("a.mp4", clip)}
                                             ).json())
        second = wait_for(client, client.post("/v1/videos", files={"video": ("b.mp4", clip)}
                                              ).json())
        assert first["state"] == second["state"] == "done"
        store = client.app.state.server.jobs
        first_folder = store.get(first["id"]).folder
        third = client.post("/v1/videos", files={"video": ("c.mp4", clip)})
        assert third.status_code == 202  # the oldest finished job made room
        assert client.get(f"/v1/jobs/{first['id']}").status_code == 404
        assert not first_folder.exists()
        wait_for(client, third.json())
        for job in store.jobs.values():  # all running: nothing may be dropped
            job.state = "running"
        busy = client.post("/v1/videos", files={"video": ("d.mp4", clip)})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "10"
        for job in store.jobs.values():
            job.state = "done"


def test_server_processes_sharing_a_job_folder_see_and_delete_each_others_jobs(tmp_path):
    """Two servers on one job folder (as `engine serve --workers 2` runs them): a video job
    taken by one is followed, fetched, listed and deleted through the other."""
    clip = make_clip(tmp_path / "clip.mp4", frames=6, size=(48, 32))
    shared = tmp_path / "jobs"
    shared.mkdir(mode=0o700)
    settings = ServeSettings(job_dir=shared, shared_jobs=True)
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as other:
        started = one.post("/v1/videos", files={"video": ("clip.mp4", clip.read_bytes())},
                           data={"style": "starry"})
        assert started.status_code == 202, started.text
        job = wait_for(other, started.json())  # followed through the other server
        assert job["state"] == "done" and job["frames"] == 6, job
        assert [row["id"] for row in other.get("/v1/jobs").json()["jobs"]] == [job["id"]]
        result = other.get(job["result"])
        assert result.status_code == 200 and len(frames_of_bytes(result.content, tmp_path)) == 6
        assert other.get("/v1/jobs/../etc").status_code == 404
        assert other.get("/v1/jobs/0123456789abcdef").status_code == 404
        assert other.delete(f"/v1/jobs/{job['id']}").status_code == 200
        assert one.get(f"/v1/jobs/{job['id']}").status_code == 404  # its owner deleted it
        assert other.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert list(shared.iterdir()) == []
    assert shared.is_dir()  # the folder belongs to the process that started the servers


def frames_of_bytes(data: bytes, folder: Path) -> list:
    path = folder / "fetched.mp4"
    path.write_bytes(data)
    return frames_of(path)


def test_a_job_whose_server_process_ended_reads_as_failed(tmp_path):
    """A shared job folder holds a running job of a process that is gone: the others answer
    for it as failed, with why."""
    import subprocess
    import sys

    shared = tmp_path / "jobs"
    shared.mkdir(mode=0o700)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = shared / "00112233aabbccdd"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps({
        "id": folder.name, "kind": "video", "state": "running", "progress": 0.5, "message": "",
        "frames": 3, "created": time.time(), "owner": gone.pid, "result_file": None,
        "run_folder": None}))
    with TestClient(create_app(ServeSettings(job_dir=shared, shared_jobs=True))) as client:
        job = client.get(f"/v1/jobs/{folder.name}").json()
        assert job["state"] == "failed" and "ended" in job["message"] and job["frames"] == 3


def test_the_worker_starts_the_next_batch_before_it_waits_for_the_last():
    """A `run` that starts its pass and answers how to wait for it: while one batch is
    running, the next one is started, then the first is waited for; every frame comes back
    to its own request, and an error reaches the requests of its batch only."""
    events = []
    release = threading.Event()

    def run(key, frames):
        events.append(("start", key))
        if key == "bad":
            raise ValueError("a broken pass")

        def finish():
            release.wait(60)
            events.append(("finish", key))
            return frames + 1
        return finish

    batcher = Batcher(run, wait=0.0)
    try:
        gate = threading.Event()
        batcher.call(gate.wait, 60)  # the worker held while three requests queue
        frame = np.zeros((2, 2, 3), np.uint8)
        first = batcher.submit("a", frame)
        second = batcher.submit("b", frame + 10)
        bad = batcher.submit("bad", frame)
        gate.set()
        deadline = time.time() + 60
        while len(events) < 2 and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert events[:2] == [("start", "a"), ("start", "b")]  # "b" started before "a" waited
        release.set()
        assert first.result(60)[0, 0, 0] == 1 and second.result(60)[0, 0, 0] == 11
        with pytest.raises(ValueError, match="broken"):
            bad.result(60)
        assert events.index(("finish", "a")) < events.index(("finish", "b"))
    finally:
        release.set()
        batcher.close()


def test_a_pass_that_fails_is_one_json_line_and_big_frames_share_smaller_batches(serve):
    """The device out of memory: 503 with Retry-After (try again); another failure: 500; each
    one line, and the server goes on. Frames of 1080p share a pass four at most."""
    with serve() as client:
        service = client.app.state.server.service
        assert service.batcher.largest(np.zeros((1080, 1920, 3), np.uint8)) == 4
        assert service.batcher.largest(np.zeros((512, 512, 3), np.uint8)) == 8
        real = service._run
        for message, status in (("cudaMallocAsync(&data) failed: out of memory", 503),
                                ("something broke\nin two lines", 500)):
            def broken(key, frames, message=message):
                raise RuntimeError(message)
            service.batcher._run = broken
            answer = client.post("/v1/stylize", files={"image": ("c.png", photo_bytes())},
                                 data={"style": "starry"})
            assert answer.status_code == status, answer.text
            assert "\n" not in answer.json()["error"]
            if status == 503:
                assert answer.headers["retry-after"] == "1" and "memory" in answer.json()["error"]
        service.batcher._run = real
        assert client.post("/v1/stylize", files={"image": ("c.png", photo_bytes())},
                           data={"style": "starry"}).status_code == 200
