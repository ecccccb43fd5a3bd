"""``--resume`` reuses only what was made from the same inputs: case ids carry fingerprints of the model files, the
data set, the code and the concurrency; a changed input gets a new case folder (earlier results are named, not
reused); a record whose fingerprints disagree with its folder's is refused; degraded cases run again."""

import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from cepr.data.identity import data_fingerprint
from cepr.errors import CeprError
from cepr.runner.config import parse_job
from cepr.runner.job import RunOptions, run_job
from cepr.runner.testcase import build_test_cases


def run(path, **kw):
    mods = sys.modules.get("tiny_ji_modules")
    if mods is not None:
        mods.CALLS.clear()
    return run_job(path, RunOptions(progress=False, check_frames=False, **kw))  # fake frames: no pre-flight


def edge_calls() -> list:
    return [c for c in sys.modules["tiny_ji_modules"].CALLS if c[0] == "edge"]


@pytest.fixture
def job_with_files(tiny_job, tmp_path):
    """A one-case tiny job whose index lists real files, with a (tiny) model file named by a hyperparameter."""
    for i in range(6):
        (tmp_path / "data" / f"img{i}.png").write_bytes(b"rgb%d" % i)
        (tmp_path / "data" / f"lab{i}.png").write_bytes(b"lab%d" % i)
    (tmp_path / "tiny.model").write_bytes(b"weights v1")
    return tiny_job(hem_hps={"threshold": [0.5], "model": [str(tmp_path / "tiny.model")]})


def rewrite(path: Path, data: bytes) -> None:
    """New bytes and a later modification time (some file systems keep mtimes in whole seconds)."""
    old = path.stat().st_mtime_ns
    path.write_bytes(data)
    if path.stat().st_mtime_ns == old:
        t = time.time() + 2
        os.utime(path, (t, t))


def test_same_inputs_give_the_same_id_and_are_reused(job_with_files):
    r1 = run(job_with_files)
    r2 = run(job_with_files, resume=True)
    assert r2.skipped == 1 and edge_calls() == []
    assert r2.records[0]["id"] == r1.records[0]["id"]
    fp = r1.records[0]["fingerprints"]
    assert set(fp) == {"models", "data", "code", "concurrency"} and fp["concurrency"] in (1, None)
    assert list(fp["models"]) == [f"hard_example_mining/model:{Path(job_with_files).parent / 'tiny.model'}"]
    assert fp["data"]["files"] == 12 and fp["data"]["name"] == "data" and fp["data"]["synthetic"] is False


def test_changed_data_file_gives_a_new_id_and_is_not_reused(job_with_files, caplog):
    r1 = run(job_with_files)
    rewrite(Path(job_with_files).parent / "data" / "lab3.png", b"another label")
    with caplog.at_level(logging.WARNING, "cepr.runner.job"):
        r2 = run(job_with_files, resume=True)
    assert r2.skipped == 0 and len(edge_calls()) == 6  # run again, in a new folder
    assert r2.records[0]["id"] != r1.records[0]["id"]
    assert Path(r1.records[0]["output_dir"]).is_dir()  # the earlier result is kept, not overwritten
    msg = "\n".join(r.getMessage() for r in caplog.records)
    assert f"found 1 earlier result(s) of test case {r2.records[0]['id']} made with other data" in msg
    assert r1.records[0]["id"] in msg and "not reused" in msg


def test_changed_model_file_gives_a_new_id_and_is_not_reused(job_with_files, caplog):
    r1 = run(job_with_files)
    rewrite(Path(job_with_files).parent / "tiny.model", b"weights v2, retrained")
    with caplog.at_level(logging.WARNING, "cepr.runner.job"):
        r2 = run(job_with_files, resume=True)
    assert r2.skipped == 0 and len(edge_calls()) == 6
    assert r2.records[0]["id"] != r1.records[0]["id"]
    assert "made with other models" in caplog.text


def test_index_content_and_concurrency_change_the_id(job_with_files):
    job = parse_job(job_with_files)
    one = build_test_cases(job, {"concurrency": 1})[0].id
    assert build_test_cases(job, {"concurrency": 1})[0].id == one  # stable
    assert build_test_cases(job, {"concurrency": 4})[0].id != one
    index = Path(job_with_files).parent / "data" / "test-index.txt"
    index.write_text(index.read_text() + "# a comment changes the file\n")
    assert build_test_cases(parse_job(job_with_files), {"concurrency": 1})[0].id != one


def test_a_record_with_other_fingerprints_in_the_case_folder_is_refused(job_with_files):
    r1 = run(job_with_files)
    p = Path(r1.records[0]["output_dir"], "record.json")
    rec = json.loads(p.read_text())
    rec["fingerprints"]["data"]["fingerprint"] = "0" * 16
    p.write_text(json.dumps(rec))
    with pytest.raises(CeprError, match=r"made with other data than this run.*--workspace.*delete"):
        run(job_with_files, resume=True)


def test_a_degraded_case_is_run_again_with_the_reason_logged(job_with_files, caplog):
    r1 = run(job_with_files)
    p = Path(r1.records[0]["output_dir"], "record.json")
    rec = json.loads(p.read_text())
    rec["degraded"] = True
    rec["cloud"] = {**(rec.get("cloud") or {}), "why": "4 of 6 cloud calls failed"}
    p.write_text(json.dumps(rec))
    with caplog.at_level(logging.WARNING, "cepr.runner.job"):
        r2 = run(job_with_files, resume=True)
    assert r2.skipped == 0 and len(edge_calls()) == 6
    assert r2.records[0]["id"] == r1.records[0]["id"]  # same inputs, same folder: retried in place
    assert "finished degraded earlier (4 of 6 cloud calls failed): running it again" in caplog.text
    assert json.loads(p.read_text()).get("degraded") in (False, None)


def test_data_fingerprint_is_cheap_and_names_the_set(tmp_path):
    root = tmp_path / "synth" / "640x480"
    root.mkdir(parents=True)
    (tmp_path / "synth" / "dataset.json").write_text(json.dumps({"name": "s", "synthetic": True}))
    for i in range(300):
        (root / f"r{i}.png").write_bytes(b"x")
        (root / f"l{i}.png").write_bytes(b"y")
    (root / "test-index.txt").write_text("".join(f"r{i}.png l{i}.png\n" for i in range(300)))
    t = time.perf_counter()
    d = data_fingerprint(root / "test-index.txt")
    assert time.perf_counter() - t < 1.0
    assert d["files"] == 600 and d["name"] == "synth/640x480" and d["synthetic"] is True
    assert data_fingerprint(root / "test-index.txt") == d
    assert data_fingerprint(tmp_path / "missing.txt")["fingerprint"] == "missing"
