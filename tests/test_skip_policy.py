"""The suite's parallel-run machinery: the skip policy of tests/conftest.py holds in a parallel run too (a skip
not listed in tests/allowed_skips.py fails the run, a listed one does not, whether one process runs the tests or
pytest-xdist's workers do), one file's tests share a worker, and what tests/built_once.py builds is built once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

PROBE = '''
import pytest

def test_gpu():
    pytest.skip("not run: no CUDA provider in this onnxruntime build / no GPU")

def test_other():
    pytest.skip({reason!r})

def test_ok():
    assert True
'''


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest in ``tmp_path`` with tests/conftest.py as a plugin and the project's pytest settings."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
                           "-c", str(TESTS.parent / "pyproject.toml"), "--rootdir", str(tmp_path),
                           "-o", "addopts=-ra", *args],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(TESTS)},
                          capture_output=True, text=True, timeout=240, check=False)


def _run(tmp_path: Path, reason: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE.format(reason=reason))
    return _pytest(tmp_path, str(tmp_path / "test_probe.py"), *args)


def test_an_unlisted_skip_fails_the_run_and_a_listed_one_does_not(tmp_path):
    bad = _run(tmp_path, "redis-server is not installed")
    assert bad.returncode == 1, bad.stdout[-2000:] + bad.stderr[-2000:]
    assert "skips not in tests/allowed_skips.py" in bad.stdout and "redis-server is not installed" in bad.stdout
    good = _run(tmp_path, "not run: no GPU here (TensorRT)")
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    allowed = _run(tmp_path, "redis-server is not installed", "--allow-skips")
    assert allowed.returncode == 0 and "allowed by --allow-skips" in allowed.stdout


def test_the_policy_holds_with_xdist_workers(tmp_path):
    """The workers' skips reach the controller, which fails the run."""
    bad = _run(tmp_path, "redis-server is not installed", "-n", "2", "--dist", "loadgroup")
    assert bad.returncode == 1, bad.stdout[-2000:] + bad.stderr[-2000:]
    assert "redis-server is not installed" in bad.stdout


GROUPS_PROBE = '''
import os

import pytest


@pytest.mark.parametrize("i", range(6))
def test_where(i, tmp_path_factory):
    with open({out!r}, "a") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
'''


def test_one_files_tests_share_one_xdist_worker(tmp_path):
    """tests/conftest.py groups each file's tests onto one worker (so a module's fixtures, such as a started
    server, are built once); pytest-xdist's own grouping is lost under pytest 9.2 unless the conftest repairs it."""
    out = tmp_path / "workers.txt"
    (tmp_path / "test_probe.py").write_text(GROUPS_PROBE.format(out=str(out)))
    p = _pytest(tmp_path, "-n", "2", "--dist", "loadgroup", str(tmp_path / "test_probe.py"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    workers = out.read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1 and workers[0].startswith("gw"), workers


BUILT_PROBE = '''
import os
import time

import pytest
from built_once import built_once


@pytest.fixture(scope="session")
def thing(tmp_path_factory):
    def build(folder):
        with open({builds!r}, "a") as f:
            f.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
        time.sleep(1)  # the other workers ask meanwhile
        (folder / "made.txt").write_text("x")
        return {{"folder": str(folder)}}

    return built_once(tmp_path_factory, "thing", build)


def test_uses_it(thing):
    assert open(os.path.join(thing["folder"], "made.txt")).read() == "x"
    with open({users!r}, "a") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
'''


def test_what_is_built_once_is_built_once_for_all_workers(tmp_path):
    """tests/built_once.py: a session fixture that several xdist workers need is built by one of them."""
    builds, users = tmp_path / "builds.txt", tmp_path / "users.txt"
    files = []
    for i in range(4):  # four files, one group each: both workers get some
        files.append(tmp_path / f"test_probe{i}.py")
        files[-1].write_text(BUILT_PROBE.format(builds=str(builds), users=str(users)))
    p = _pytest(tmp_path, "-n", "2", "--dist", "loadgroup", *map(str, files))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert len(builds.read_text().split()) == 1
    assert len(users.read_text().split()) == 4 and len(set(users.read_text().split())) == 2
