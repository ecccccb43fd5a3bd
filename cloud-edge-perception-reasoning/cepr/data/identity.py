"""Which data set a file belongs to (``dataset_identity``: its name and whether it is synthetic) and a fingerprint
of the test set an index lists (``data_fingerprint``): what records, rank rows and ``--resume`` compare."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

SHORT = 16  # hex digits kept of a sha256


# ---- data ------------------------------------------------------------------------------------------------

def _manifest(index: Path) -> Path | None:
    for d in (index.parent, index.parent.parent):
        if (d / "dataset.json").is_file():
            return d / "dataset.json"
    return None


def dataset_identity(path: str | Path) -> dict:
    """``{"name", "synthetic"}`` of the set a file belongs to (its test index, or any frame or label it lists).

    The name is ``<root>/<resolution>`` for the Cloud-Robotics layout (``<root>/<W>x<H>/...``, e.g.
    ``cloud-robotics-synth-bench/640x480``), else the file's folder name. ``synthetic`` comes from the set's
    ``dataset.json`` manifest (written by the synthetic generator); a set without one is not synthetic."""
    p = Path(path).resolve()
    res = next((d for d in p.parents if re.fullmatch(r"\d+x\d+", d.name)), None)
    name = f"{res.parent.name}/{res.name}" if res is not None else p.parent.name
    synthetic = False
    for d in ((res, res.parent) if res is not None else (p.parent, p.parent.parent)):
        man = d / "dataset.json"
        if man.is_file():
            try:
                synthetic = bool(json.loads(man.read_text()).get("synthetic", False))
            except (OSError, ValueError, AttributeError):
                synthetic = False
            break
    return {"name": name, "synthetic": synthetic}


def data_fingerprint(index: str | Path) -> dict:
    """``{"fingerprint", "files", "name", "synthetic"}`` of the test set an index names (see the module doc);
    ``{"fingerprint": "missing"}`` while the index does not exist (the synthetic set is made later)."""
    index = Path(index)
    if not index.is_file():
        return {"fingerprint": "missing", "files": 0, **dataset_identity(index)}
    raw = index.read_bytes()
    h = hashlib.sha256(raw)
    n = 0
    for line in raw.decode("utf-8", "replace").splitlines():
        cols = line.split()
        if not cols or cols[0].startswith("#"):
            continue
        for c in cols[:2]:
            p = Path(c) if os.path.isabs(c) else index.parent / c
            try:
                st = os.stat(p)
                h.update(f"{c}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{c}\0missing\n".encode())
            n += 1
    man = _manifest(index.resolve())
    if man is not None:
        h.update(man.read_bytes())
    return {"fingerprint": h.hexdigest()[:SHORT], "files": n, **dataset_identity(index)}
