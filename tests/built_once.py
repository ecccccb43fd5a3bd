"""What a test run builds once, however many pytest-xdist workers ask for it (the pattern pytest-xdist's docs
give for session fixtures: a file lock in the run's shared temporary root)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil


def built_once(tmp_path_factory, name: str, build):
    """The JSON result of ``build(folder)``, built once per test run: the first xdist worker to ask builds it
    under a lock in the run's shared temporary root, the others wait for it and reuse the folder (a session
    fixture alone is built once per worker). Without xdist, the session's own temporary root."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, lock_path = root / f"built-{name}", root / f"built-{name}.lock"
    done = folder / "built.json"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the build fails
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed halfway in another worker
            folder.mkdir()
            done.write_text(json.dumps(build(folder)))
    return json.loads(done.read_text())
