"""End-to-end runs of the real ``cepr datasets`` command line."""

import json
import subprocess
import sys

import pytest


def cepr(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "cepr", *map(str, args)], check=False, capture_output=True, text=True,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"cepr {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    p = cepr("datasets", "synth", "--out", out, "--frames", 8, "--seed", 2, "--workers", 2, "--no-progress")
    assert "generated 8 frame(s)" in p.stdout
    return out


def test_help_lists_commands():
    p = cepr("--help")
    assert "datasets" in p.stdout
    p = cepr("datasets", "synth", "--help")
    assert "--resolutions" in p.stdout and "--seed" in p.stdout


def test_synth_rerun_is_a_no_op(synth_set):
    p = cepr("datasets", "synth", "--out", synth_set, "--frames", 8, "--seed", 2, "--no-progress")
    assert "already present" in p.stdout


def test_check_passes_on_a_fresh_set(synth_set):
    p = cepr("datasets", "check", synth_set, "--no-progress")
    assert "OK" in p.stdout


def test_check_fails_listing_each_problem(synth_set, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(synth_set, bad)
    labels = sorted((bad / "640x480" / "gtFine").rglob("*_TrainIds.png"))
    labels[0].write_bytes(b"not a png at all")
    rgbs = sorted((bad / "640x480" / "rgb").rglob("*.png"))
    rgbs[1].unlink()
    p = cepr("datasets", "check", bad, "--no-progress", check=False)
    assert p.returncode == 1
    assert labels[0].name in p.stdout and rgbs[1].name in p.stdout
    assert "FAILED" in p.stdout


def test_stats_prints_classes_and_task_balance_and_writes_json(synth_set, tmp_path):
    out = tmp_path / "stats.json"
    p = cepr("datasets", "stats", synth_set, "--split", "all", "--json", out, "--no-progress")
    assert "task answer balance" in p.stdout and "path_hazard" in p.stdout and "road" in p.stdout
    doc = json.loads(out.read_text())
    assert doc["frames"] == 8
    assert sum(doc["tasks"]["answers"]["action"].values()) == 8
    assert all(v == 1.0 for v in doc["tasks"]["sidecar_agreement"].values())
    assert doc["tasks"]["depth_frames"] == 8
    assert all(0.0 <= v <= 1.0 for v in doc["tasks"]["ground_plane_agreement"].values())
    assert "ground-plane (no depth) vs depth" in p.stdout
    assert abs(sum(doc["class_pixel_fraction"].values()) - 1.0) < 1e-6


def test_errors_are_one_line_without_traceback(tmp_path):
    p = cepr("datasets", "stats", tmp_path / "nowhere", check=False)
    assert p.returncode == 2
    assert "cepr: error:" in p.stderr and "Traceback" not in p.stderr
    p = cepr("datasets", "synth", "--out", tmp_path / "x", "--resolutions", "640by480", check=False)
    assert p.returncode == 2 and "bad resolution" in p.stderr
