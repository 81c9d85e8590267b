"""A minimal client of Firefox's Marionette protocol (what geckodriver speaks to Firefox), so
that Debian's Firefox ESR can be driven with no geckodriver: length-prefixed JSON over TCP."""

import json
import socket
import time


class Marionette:
    def __init__(self, port: int, timeout: float = 60.0):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.id = 0
        self._read()  # the server's hello

    def _read(self):
        size = b""
        while not size.endswith(b":"):
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("Firefox closed the connection")
            size += chunk
        length, data = int(size[:-1]), b""
        while len(data) < length:
            data += self.sock.recv(length - len(data))
        return json.loads(data)

    def __call__(self, command: str, **params):
        self.id += 1
        body = json.dumps([0, self.id, command, params]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        _, _, error, result = self._read()
        if error:
            raise RuntimeError(f"{command}: {error}")
        return result

    def execute_script(self, code: str):  # (Selenium's name, so one wait() serves both)
        return self("WebDriver:ExecuteScript", script=code, args=[])["value"]

    def element(self, css: str) -> str:
        found = self("WebDriver:FindElement", using="css selector", value=css)["value"]
        return next(iter(found.values()))
