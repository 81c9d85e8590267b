"""`engine serve` as a command: its refusals before anything listens, and several server
processes behind one address."""

import http.client
import json
import os
import signal
import time

import pytest

from ..test_cli import _one_line_error, _run
from .running import start_serve
from .test_api import photo_bytes


@pytest.mark.parametrize("args, needle", [
    (["--host", "0.0.0.0"], "give --token"),
    (["--host", "192.168.1.20"], "give --token"),
    (["--device", "gpu"], "give cpu or a GPU index"),
    (["--content", "no/such/folder"], "not a folder of photos"),
])
def test_serve_refuses_what_it_cannot_do_safely(args, needle):
    _one_line_error(_run("serve", *args), needle)


def _start_serve(tmp_path, *args):
    """`engine serve --net fast ARGS`, TMPDIR in tmp_path: (process, (host, port))."""
    process, host, port = start_serve("--net", "fast", *args, env={"TMPDIR": str(tmp_path)})
    return process, (host, port)


def _processes(address, count: int) -> set[int]:
    """The server processes that answer /healthz, asked on new connections until `count`
    different ones did (or 200 times): the kernel hands each connection to one of them."""
    seen = set()
    for _ in range(200):
        connection = http.client.HTTPConnection(*address, timeout=60)
        try:
            connection.request("GET", "/healthz")
            seen.add(json.loads(connection.getresponse().read())["process"])
        except (ConnectionError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        if len(seen) >= count:
            break
    return seen


def test_serve_with_two_processes_answers_from_both_and_stops_on_ctrl_c(tmp_path):
    """`engine serve --workers 2`: one address, two server processes behind it; Ctrl-C (the
    terminal's SIGINT to the process group) stops both, and the shared job folder goes."""
    process, address = _start_serve(tmp_path, "--workers", "2")
    try:
        assert len(list(tmp_path.glob("engine-serve-*"))) == 1  # the one job folder
        seen = _processes(address, 2)
        assert len(seen) == 2 and process.pid not in seen
        connection = http.client.HTTPConnection(*address, timeout=120)
        connection.request("POST", "/v1/stylize/raw?style=starry&format=png", photo_bytes(),
                           {"Content-Type": "image/png"})
        answer = connection.getresponse()
        assert answer.status == 200 and answer.read()[:8] == b"\x89PNG\r\n\x1a\n"
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=120) == 0
        assert "stopped" in process.stderr.read()
        assert not list(tmp_path.glob("engine-serve-*"))
        for pid in seen:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_a_server_process_that_ends_is_replaced(tmp_path):
    """One of `engine serve --workers 2` killed: the parent says so and starts another; the
    address keeps answering."""
    process, address = _start_serve(tmp_path, "--workers", "2")
    try:
        before = _processes(address, 2)
        os.kill(before.pop(), signal.SIGKILL)
        deadline = time.time() + 120
        seen = set()
        while time.time() < deadline and not (seen - before):
            seen |= _processes(address, 1)
            time.sleep(0.2)
        assert seen - before, "no new server process answered"
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        assert "starting another" in process.stderr.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_taken_port_is_one_line(workers):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        _one_line_error(_run("serve", "--port", port, "--workers", workers),
                        "choose another --port")
    finally:
        taken.close()
