"""`engine serve` as a real process, for the tests that need one."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest


def start_serve(*args, env: dict | None = None, cwd=None, timeout: float = 240
                ) -> tuple[subprocess.Popen, str, int]:
    """`engine serve --port 0 ARGS` in its own process group, `env` added to this process's;
    (process, host, port) once it prints its address. Its stderr stays open to read."""
    process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0", *args],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               start_new_session=True, cwd=cwd,
                               env={**os.environ, **(env or {})})
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        found = re.search(r"http://(127\.0\.0\.1):(\d+)/", line)
        if found:
            return process, found.group(1), int(found.group(2))
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"engine serve did not start: {process.stderr.read()}")
