"""`cepr bench edge` end to end on tiny models: the figures it prints are the ones its JSON holds, and agree."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_edge_prints_stages_ratio_and_cpu_flags(tiny_models, tiny_data, tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "edge", "--data", tiny_data, "--frames", 3, "--int8", tiny_models["int8"], "--fp32",
            tiny_models["fp32"], "--checkpoint", "", "--calibration", "", "--json", out, "--no-progress"]
    p = subprocess.run([sys.executable, "-m", "cepr", *map(str, args)], capture_output=True, text=True, timeout=300,
                       check=False)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    m = r["machine"]
    assert isinstance(m["vnni"], bool) and m["cores"] >= 1
    assert m["vnni"] == bool({"avx512_vnni", "avx_vnni"} & set(m["flags"]))
    assert "INT8 speed-up" in p.stdout and f"[{' '.join(m['flags'])}]" in p.stdout
    assert ("target >= 2.5x on a VNNI CPU" in p.stdout) == m["vnni"]
    stages = r["stages_ms"]
    assert {"perception.preprocess", "perception.inference", "perception.postprocess", "summary", "planner",
            "total"} <= set(stages)
    # the total is the sum of the stages, frame by frame, so its median is no less than each stage's median
    assert all(stages["total"]["median"] >= v["median"] for k, v in stages.items())
    for name, model in r["models"].items():
        assert model["frame_ms"]["median"] >= model["net_ms"]["median"] > 0, name
    assert r["ratios"]["fp32_over_int8"] == r["models"]["onnx-fp32"]["net_ms"]["median"] / \
        r["models"]["onnx-int8"]["net_ms"]["median"]
    assert r["threads"] == 1 and "summary" in r["targets_ms"]


def test_bench_edge_ground_plane_distances(tiny_models, tiny_data, tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "edge", "--data", tiny_data, "--frames", 2, "--int8", tiny_models["int8"], "--fp32", "",
            "--checkpoint", "", "--calibration", "", "--distances", "ground-plane", "--json", out, "--no-progress"]
    p = subprocess.run([sys.executable, "-m", "cepr", *map(str, args)], capture_output=True, text=True, timeout=300,
                       check=False)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["distances"] == "ground-plane" and "distances from ground-plane" in p.stdout
    assert "fp32_over_int8" not in r["ratios"] and r["stages_ms"]["summary"]["median"] > 0
