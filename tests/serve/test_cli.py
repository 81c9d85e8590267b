"""`engine serve` as a command: its refusals before anything listens, and several server
processes behind one address."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from ..test_cli import _one_line_error, _run
from .test_api import photo_bytes


@pytest.mark.parametrize("args, needle", [
    (["--host", "0.0.0.0"], "give --token"),
    (["--host", "192.168.1.20"], "give --token"),
    (["--device", "gpu"], "give cpu or a GPU index"),
    (["--content", "no/such/folder"], "not a folder of photos"),
])
def test_serve_refuses_what_it_cannot_do_safely(args, needle):
    _one_line_error(_run("serve", *args), needle)


def test_serve_with_two_processes_answers_from_both_and_stops_on_ctrl_c(tmp_path):
    """`engine serve --workers 2`: one address, two server processes behind it; Ctrl-C (the
    terminal's SIGINT to the process group) stops both, and the shared job folder goes."""
    process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0",
                                "--workers", "2", "--net", "fast"], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, start_new_session=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        address = None
        deadline = time.time() + 240
        while time.time() < deadline and address is None:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            found = re.search(r"http://(127\.0\.0\.1):(\d+)/", line)
            address = (found.group(1), int(found.group(2))) if found else None
        assert address is not None, f"engine serve did not start: {process.stderr.read()}"
        assert len(list(tmp_path.glob("engine-serve-*"))) == 1  # the one job folder
        seen = set()
        for _ in range(200):  # each a new connection; the kernel hands it to either process
            connection = http.client.HTTPConnection(*address, timeout=60)
            connection.request("GET", "/healthz")
            seen.add(json.loads(connection.getresponse().read())["process"])
            connection.close()
            if len(seen) == 2:
                break
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
