"""The auto-started reference server's output is drained while it runs (a full pipe would block it) and its last
lines explain a failed start."""

import urllib.request

import pytest

from cepr.errors import CeprError
from cepr.servers.autoserve import ReferenceServer

pytest.importorskip("fastapi")


def test_a_chatty_server_never_blocks_on_its_output(cloud_model):
    # uvicorn logs one access line per request at --log-level info: 2000 lines are over 130 KB, more than a pipe
    # holds (64 KB): a server whose output nobody read stopped answering after about 1100 requests
    srv = ReferenceServer(cloud_model, startup_s=60, extra_args=("--log-level", "info"))
    try:
        for _ in range(2000):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/health", timeout=5).read()
        assert srv.proc.poll() is None
        assert any("GET /health" in line for line in srv.output)
        assert len(srv.output) <= ReferenceServer.KEEP_LINES
    finally:
        srv.stop()
    assert srv.proc.poll() is not None


def test_a_failed_start_shows_the_servers_last_output(tmp_path):
    with pytest.raises(CeprError, match=r"exited at start-up(.|\n)*no-such-model"):
        ReferenceServer(str(tmp_path / "no-such-model.onnx"), startup_s=60)
