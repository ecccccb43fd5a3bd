"""Start the real reference cloud expert server (a subprocess running ``cepr serve cloud``) for the tests."""

import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import free_port


class Server:
    def __init__(self, model, *flags):
        pytest.importorskip("fastapi")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen([sys.executable, "-m", "cepr", "serve", "cloud", "--port", str(self.port),
                                      "--model", str(model), *map(str, flags)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become healthy in 60 s")

    def get(self, path: str) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5).read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start_server(tiny_rgb_model):
    servers = []

    def start(*flags):
        s = Server(tiny_rgb_model, *flags)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
