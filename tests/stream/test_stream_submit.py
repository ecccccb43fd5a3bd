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


def test_cli_worker_in_process_backend_no_link(redis_srv, tmp_path, monkeypatch, capsys):
    """`cepr stream worker -f ALGORITHM_YAML` with the in-process expert, --no-link and --max-answers."""
    from stream_support import camera_meta, make_summary

    from cepr.cli import main
    from cepr.stream.queue import CloudQueue

    algos = ROOT / "testalgorithms" / "perception-reasoning"
    yaml = tmp_path / "inprocess.yaml"
    yaml.write_text(f"""algorithm:
  paradigm_type: "jointinference"
  modules:
    - type: "edgemodel"
      name: "CeprEdgeModel"
      url: "{algos / 'cepr_edge_model.py'}"
    - type: "cloudmodel"
      name: "CeprCloudModel"
      url: "{algos / 'cepr_cloud_model.py'}"
      hyperparameters:
        - backend:
            values: ["inprocess"]
        - link:
            values: ["4g"]
    - type: "hard_example_mining"
      name: "CloudOnly"
      url: "{algos / 'cepr_hard_example_mining.py'}"
""")
    q = CloudQueue(redis_srv.url)
    for i in range(3):
        q.submit(f"c{i}", make_summary(seed=i), "people_count", camera_meta())
    assert main(["stream", "worker", "--redis", redis_srv.url, "-f", str(yaml), "--no-link", "--name", "cli",
                 "--max-answers", "3"]) == 0
    assert '"answered": 3' in capsys.readouterr().out
    got = q.wait_for(["c0", "c1", "c2"], 5)
    assert all(r.ok and r.worker == "cli" and r.detail["transfer_ms"] == 0 for r in got.values())
    c = q.counts()
    assert c["accepted"] == c["answered"] == 3 and c["in_flight"] == 0
