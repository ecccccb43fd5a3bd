"""Fault drills against the real CLI: bad frames in a set in the real layout, Ctrl-C with
--concurrency, a killed runner's auto-started server, an unwritable workspace."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import update_yaml
from real_layout import make_real_layout

REPO = Path(__file__).resolve().parents[2]
N_TEST = 5


def _real_job(root: Path, cloud: dict | None = None) -> tuple[Path, list[str], list[str]]:
    """The repository's real-set job on a 5-frame set in the real layout: (job folder, rgb paths, label paths).
    ``cloud``: keys set in the shared cloud settings (the session's reference expert for the fault tests that do
    not test how the expert starts, and the link's time not waited out: they check records, not timings)."""
    make_real_layout(root / "datasets" / "Cloud-Robotics", n_test=N_TEST, n_train=1)
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, root / d)
    shutil.copy(REPO / "benchmarkingjob-real.yaml", root)
    if cloud:
        update_yaml(root / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml",
                    {**cloud, "emulate_link": False})
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


def test_bad_frames_are_failed_samples_and_the_good_ones_are_scored(tmp_path, reference_expert):
    """Before: a bad label left the case "ok" with blank accuracy and mIoU and exit 0; a missing RGB failed the
    whole case. Now each bad frame is a failed sample with its file and reason; metrics come from the others."""
    pytest.importorskip("fastapi")
    cwd, rgbs, labels = _real_job(tmp_path, reference_expert)
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


class _SlowJob:
    """A stand-in JointInferenceJob whose samples take ``seconds`` each; counts the samples started."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, []

    def inference(self, s):
        import time

        self.started.append(s)
        time.sleep(self.seconds)
        return [False, {"answer": s}, None, None]


def test_ctrl_c_with_concurrency_cancels_what_has_not_started():
    """Before: Ctrl-C (a KeyboardInterrupt in the main thread) left every queued sample to run (150 sent, 12
    saved). Now the queued ones are cancelled, those in flight end, and what finished is handed back."""
    import time

    from cepr.runner.paradigm import Interrupted, run_samples

    job, seen = _SlowJob(0.2), []

    def on_result(i, r):
        seen.append(i)
        if len(seen) == 2:
            raise KeyboardInterrupt

    t0 = time.perf_counter()
    with pytest.raises(Interrupted) as exc:
        run_samples(job, list(range(40)), concurrency=2, progress=False, on_result=on_result)
    took = time.perf_counter() - t0
    assert len(job.started) <= 6, job.started  # 2 in flight at most, never the 40 queued
    assert took < 2.0
    assert exc.value.finished == 2 and [i for i, r in enumerate(exc.value.results) if r is not None] == [0, 1]


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(x) for x in task.read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_default_job(tiny_data: Path, cwd: Path, *args: str) -> subprocess.Popen:
    from helpers import copy_default_job

    te = copy_default_job(cwd, tiny_data)
    te["testenv"]["dataset"]["test_index"] = te["testenv"]["dataset"]["train_index"]
    import yaml

    (cwd / "testenv" / "testenv.yaml").write_text(yaml.safe_dump(te))
    # SIGINT as a terminal delivers it: a shell without job control starts background commands (CI scripts run
    # with `&`) with SIGINT ignored, and Python then keeps ignoring it instead of raising KeyboardInterrupt
    return subprocess.Popen([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--no-progress",
                             *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)  # noqa: PLW1509 - it only resets one disposition


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(cond, timeout: float, what: str):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_ctrl_c_of_cepr_run_exits_130_and_keeps_what_finished(tiny_data, tmp_path):
    """SIGINT while the cloud-only case runs with --concurrency 2: exit 130 within seconds, the case recorded
    "interrupted" with its finished samples, the finished cases in the rank, and the auto-started server gone."""
    import signal
    import time

    pytest.importorskip("fastapi")
    proc = _start_default_job(tiny_data, tmp_path, "--concurrency", "2")
    try:
        ws = tmp_path / "workspace" / "cepr-default"

        def cloud_only_running():
            for p in ws.glob("cloud-only/*/samples.jsonl"):
                if p.read_text().count("\n") >= 1:
                    return p
            return None
        samples = _wait_for(cloud_only_running, 120, "the cloud-only case to finish a sample")
        server = [c for c in _children(proc.pid) if _alive(c)]
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert took < 15, took
    assert "interrupted" in err and "Traceback" not in err, err[-2000:]
    rec = json.loads((samples.parent / "record.json").read_text())
    assert rec["status"] == "interrupted" and rec["n_ok"] >= 1
    lines = samples.read_text().splitlines()
    assert len(lines) < 16 and all(json.loads(x) for x in lines)  # whole lines only, not every sample
    assert (ws / "rank" / "all_rank.csv").is_file()  # the edge-only case, finished before, is ranked
    assert "edge-only" in (ws / "rank" / "all_rank.csv").read_text()
    _wait_for(lambda: not any(_alive(c) for c in server), 5, "the auto-started server to stop")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_a_killed_runner_leaves_no_cloud_server(tiny_data, tmp_path):
    """Before: SIGKILL of `cepr run` (no atexit) left its auto-started `cepr serve cloud` running for good."""
    import signal

    pytest.importorskip("fastapi")
    proc = _start_default_job(tiny_data, tmp_path)
    try:
        def server_started():
            return [c for c in _children(proc.pid) if _alive(c)
                    and b"serve" in Path(f"/proc/{c}/cmdline").read_bytes()]
        server = _wait_for(server_started, 120, "the runner to start its cloud server")
        _wait_for(lambda: list((tmp_path / "workspace").rglob("cloud-only/*/record.json")), 120, "cloud-only")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        _wait_for(lambda: not any(_alive(c) for c in server), 5, "the orphaned server to exit")
    finally:
        for c in server:
            if _alive(c):
                import os

                os.kill(c, signal.SIGKILL)


@pytest.mark.parametrize("fault", ["disk-full", "not-a-folder"])
def test_an_unwritable_workspace_fails_with_one_line_and_keeps_what_finished(tmp_path, monkeypatch, fault,
                                                                             reference_expert):
    """Before: a 30-line traceback, a record.json stuck at "running" and no rank for the cases that finished.
    The second case cannot be written (its samples.jsonl on a full disk, /dev/full; or a file where its folder
    goes): one line naming the path, exit 2, the first case's record and its rank row kept."""
    import os

    from cepr.runner.config import parse_job
    from cepr.runner.testcase import build_test_cases

    pytest.importorskip("fastapi")
    if fault == "disk-full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    cwd, _, _ = _real_job(tmp_path, reference_expert)
    monkeypatch.chdir(cwd)
    job = parse_job("benchmarkingjob-real.yaml")
    context = {"test_index": str(job.testenv.test_index), "mining_mode": job.testenv.mining_mode, "limit": None,
               "concurrency": 1}
    first, second = build_test_cases(job, context)[:2]
    if fault == "disk-full":
        second.output_dir.mkdir(parents=True)
        (second.output_dir / "samples.jsonl").symlink_to("/dev/full")
        where, why = second.output_dir / "samples.jsonl", "No space left on device (the disk is full)"
    else:
        second.output_dir.parent.mkdir(parents=True)
        second.output_dir.write_text("in the way")
        where, why = second.output_dir, "File exists"
    proc = _cepr(cwd)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = (f"cepr run: error: cannot write the workspace: {where}: {why}; the 1 finished test case(s) are kept: "
            "make room (or fix the permissions) and run again with --resume")
    assert line in proc.stderr.splitlines(), proc.stderr[-3000:]
    rec = json.loads((first.output_dir / "record.json").read_text())
    assert rec["status"] == "ok"
    rank = (cwd / "workspace" / "cepr-real" / "rank" / "all_rank.csv").read_text()
    assert first.id in rank and second.id not in rank
    if fault == "disk-full":
        rec2 = json.loads((second.output_dir / "record.json").read_text())
        assert rec2["status"] == "failed" and "workspace could not be written" in rec2["error"]  # not "running"
