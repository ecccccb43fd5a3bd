"""Start the real reference cloud expert server (a subprocess running ``cepr serve cloud``) for the tests."""

import urllib.request

import pytest

from cepr.cloud.autoserve import ReferenceServer


class Server(ReferenceServer):
    """The runner's server launcher, with fault flags, a GET helper and a hard kill (as a crash would)."""

    def __init__(self, model, *flags):
        pytest.importorskip("fastapi")
        super().__init__(model, threads=1, startup_s=60, extra_args=flags)

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
