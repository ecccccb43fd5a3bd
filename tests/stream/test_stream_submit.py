"""`cepr stream submit` end to end on the real Cloud-Robotics layout (no depth): the job's edge pipeline makes the
binary summaries, a worker with the in-process reference expert answers, the answers are scored."""

from __future__ import annotations

import json
from pathlib import Path

from stream_support import WorkerThread, assert_counts_add_up

ROOT = Path(__file__).resolve().parents[2]


def test_submit_real_layout_frames(redis_srv, expert_backend, tmp_path, monkeypatch, capsys):
    from cepr.cli import main
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker
    from real_layout import make_real_layout

    data = make_real_layout(tmp_path / "real", n_test=4, resolutions=("640x480",))
    monkeypatch.chdir(ROOT)  # the job's paths resolve against the repository root, as for `cepr run`
    w = WorkerThread(CloudWorker(redis_srv.url, expert_backend, "w1", block_ms=50))
    try:
        rc = main(["stream", "submit", "--redis", redis_srv.url, "-f", "benchmarkingjob-real.yaml", "--data",
                   str(data), "--frames", "4", "--image", "--json", "--wait", "60"])
    finally:
        w.stop()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["frames"] == 4 and out["statuses"] == {"ok": 4}, out
    assert 0 < out["summary_bytes_median"] < 2048 and out["image_bytes_median"] > 0
    assert out["latency_ms_p50"] > 0 and 0 <= out["cloud_accuracy"] <= 1
    c = CloudQueue(redis_srv.url).counts()
    assert c["accepted"] == c["answered"] == 4
    assert_counts_add_up(c)
