"""Fault drills of issue 11 section 2 against the real CLI: bad frames in a set in the real layout, Ctrl-C with
--concurrency, a killed runner's auto-started server, an unwritable workspace."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from real_layout import make_real_layout

REPO = Path(__file__).resolve().parents[2]
N_TEST = 5


def _real_job(root: Path) -> tuple[Path, list[str], list[str]]:
    """The repository's real-set job on a 5-frame set in the real layout: (job folder, rgb paths, label paths)."""
    make_real_layout(root / "datasets" / "Cloud-Robotics", n_test=N_TEST, n_train=1)
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, root / d)
    shutil.copy(REPO / "benchmarkingjob-real.yaml", root)
    res = root / "datasets" / "Cloud-Robotics" / "640x480"
    cols = (res / "test-index.txt").read_text().split()
    return root, [str(res / c) for c in cols[0::2]], [str(res / c) for c in cols[1::2]]


def _break_frames(rgbs: list[str], labels: list[str]) -> dict[int, str]:
    """Frame 1: truncated label; frame 2: label ids out of range; frame 3: RGB file missing."""
    p = Path(labels[1])
    p.write_bytes(p.read_bytes()[:200])
    cv2.imwrite(labels[2], np.full((480, 640), 40, np.uint16))
    Path(rgbs[3]).unlink()
    return {1: "cannot decode label file", 2: "ids outside", 3: "missing rgb file"}


def _cepr(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob-real.yaml", "--no-progress",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def test_check_data_lists_bad_frames_before_any_model_runs(tmp_path):
    cwd, rgbs, labels = _real_job(tmp_path)
    proc = _cepr(cwd, "--check-data")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check-data: 5 of 5 frame(s) good, 0 bad" in proc.stdout
    reasons = _break_frames(rgbs, labels)
    proc = _cepr(cwd, "--check-data")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "check-data: 2 of 5 frame(s) good, 3 bad" in proc.stdout
    for i, why in reasons.items():
        line = next(x for x in proc.stdout.splitlines() if x.strip().startswith(f"bad frame {i}:"))
        assert why in line and rgbs[i] in line
    assert not (cwd / "workspace").exists()  # no model ran, nothing was written


def test_bad_frames_are_failed_samples_and_the_good_ones_are_scored(tmp_path):
    """Before: a bad label left the case "ok" with blank accuracy and mIoU and exit 0; a missing RGB failed the
    whole case. Now each bad frame is a failed sample with its file and reason; metrics come from the others."""
    pytest.importorskip("fastapi")
    cwd, rgbs, labels = _real_job(tmp_path)
    reasons = _break_frames(rgbs, labels)
    proc = _cepr(cwd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out
    assert "9 test case(s) ok, 0 degraded, 0 failed; 27 sample(s) failed" in proc.stdout
    assert "3 of 5 frame(s)" in proc.stdout and "cannot be scored" in proc.stdout
    recs = [json.loads(p.read_text()) for p in (cwd / "workspace" / "cepr-real").rglob("record.json")]
    assert len(recs) == 9
    for rec in recs:
        assert rec["status"] == "ok" and rec["n_ok"] == 2 and rec["n_failed"] == 3
        assert rec["metrics"]["n"] == 2  # scored on the good samples only
        for m in ("accuracy", "miou"):
            assert rec["metrics"][m] is not None, m  # not blank
        failed = {f["index"]: f for f in rec["failed_samples"]}
        assert sorted(failed) == [1, 2, 3]
        for i, why in reasons.items():
            assert why in failed[i]["reason"] and failed[i]["rgb"] == rgbs[i] and failed[i]["label"] == labels[i]
        lines = [json.loads(x) for x in Path(rec["output_dir"], "samples.jsonl").read_text().splitlines()]
        lines.sort(key=lambda x: x["index"])  # bad frames are written first, the others as they finish
        assert [x["index"] for x in lines] == [0, 1, 2, 3, 4]
        assert [x.get("status") for x in lines if x.get("status") == "failed"] == ["failed"] * 3
        assert all(why in lines[i]["error"] and lines[i]["rgb"] == rgbs[i] for i, why in reasons.items())
