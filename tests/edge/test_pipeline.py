import subprocess
import sys

import numpy as np

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TASK_NAMES


def test_runtime_and_pipeline_never_import_torch():
    code = ("import sys, cepr, cepr.edge.runtime, cepr.edge.pipeline, cepr.edge.summary, cepr.edge.planner, "
            "cepr.cli; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pipeline_per_frame_and_batch(tiny_models, tiny_data):
    from cepr.edge.pipeline import EdgePipeline
    from cepr.edge.summary import SceneSummary

    pipe = EdgePipeline(tiny_models["int8"])
    samples = list(CloudRoboticsDataset(find_index(tiny_data, split="test")))[:3]
    results = pipe.run_batch(samples)
    assert len(results) == 3
    for s, r in zip(samples, results):
        assert r.label.shape == s.label.shape
        assert set(r.answers) == set(TASK_NAMES)
        assert SceneSummary.from_bytes(r.summary_bytes) == r.summary
        assert {"perception.inference", "summary", "planner"} <= set(r.timings_ms)
        assert r.total_ms > 0 and all(v >= 0 for v in r.timings_ms.values())
        assert 0.0 <= r.summary.uncertainty <= 1.0


def test_calibrate_command_writes_coefficients(tiny_models, tiny_data, tmp_path):
    import json

    out = tmp_path / "cal.json"
    args = ["edge", "calibrate", "--model", tiny_models["int8"], "--data", tiny_data, "--max-frames", 3, "--out", out,
            "--no-progress"]
    p = subprocess.run([sys.executable, "-m", "cepr", *map(str, args)],
                       capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert set(doc["coefficients"]) == set(TASK_NAMES)
    assert 0.0 <= doc["calibrated"]["accuracy"] <= 1.0
    assert "reliability" in p.stdout
    assert np.isfinite(doc["calibrated"]["ece"])
