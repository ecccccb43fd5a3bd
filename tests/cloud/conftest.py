"""Start the real reference cloud expert server (a subprocess running ``cepr serve cloud``) for the tests."""

import urllib.request

import pytest

from cepr.servers.autoserve import ReferenceServer


class Server(ReferenceServer):
    """The runner's server launcher, with fault flags, a GET helper and a hard kill (as a crash would)."""

    def __init__(self, model, *flags):
        pytest.importorskip("fastapi")
        super().__init__(model, threads=1, startup_s=60, extra_args=flags)

    def get(self, path: str) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5).read().decode()

    def metrics(self) -> dict[str, float]:
        """/metrics as {sample name: value}, read with prometheus_client's own parser."""
        from prometheus_client.parser import text_string_to_metric_families

        return {s.name: s.value for fam in text_string_to_metric_families(self.get("/metrics"))
                for s in fam.samples if not s.labels}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def cloud_model() -> str:
    """The shipped cloud reference model (ONNX, in the package): the real server serves it without torch, and a
    missing file fails here instead of skipping."""
    from cepr.edge.models import model_path

    return str(model_path("cloud"))


@pytest.fixture
def start_server(cloud_model):
    servers = []

    def start(*flags):
        s = Server(cloud_model, *flags)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
