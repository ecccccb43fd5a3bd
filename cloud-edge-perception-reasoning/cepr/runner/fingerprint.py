"""Fingerprints of what a test case's results depend on beyond its YAML: model files, data set, code, concurrency.

They go into the case id (so a changed input gives a new case folder, never a reused stale one) and into
``record.json`` under ``fingerprints`` (so ``--resume`` can say what changed). Definitions (docs/runner.md):

* **models**: sha256 (first 16 hex digits) of every model file cepr can know a case uses: the edge module's model
  and planner calibration (shipped names resolve through :func:`cepr.edge.models.model_path`; ``model: auto``
  counts both shipped edge models and their calibrations), and the cloud expert's model when cepr serves it
  (``base_url: auto`` or ``backend: inprocess``); with ``reasoner: grounded``, the grounded VLM's files (its
  decoder of ``vlm_quant``, projector, spec and tokenizer; ``vlm_model: auto`` counts the VLM of each edge model
  it may run), and a cloud ``backend: grounded``'s named VLM. A user module's ``model``/``calibration``/``expert_model``
  hyperparameter that names an existing file is hashed too.
* **data**: sha256 of the test index file's bytes, plus the size and modification time (ns) of every file it lists
  (both columns, every line), plus the bytes of the set's ``dataset.json`` manifest where there is one (the
  synthetic generator rewrites it, with the depth and annotation files, on every generation). A stat per listed
  file, no image is read: about 10 ms for 300 frames. Touching a file without changing it gives a new fingerprint
  (conservative: never a stale reuse).
* **code**: the cepr version and a sha256 of the package's Python source (every ``cepr/**/*.py``) and of the
  job's module and metric files. The git commit is recorded for reference but kept out of the id: the source hash
  changes with uncommitted edits (a commit does not) and stays put over commits that touch no code.
* **concurrency**: the run's ``--concurrency`` (it changes latency and throughput figures).

Files are hashed once per process (cached by path, size and modification time).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from cepr import __version__
from cepr.data.identity import SHORT
from cepr.edge.models import AUTO, EDGE_RGB, EDGE_RGBD, NO_CALIBRATION, calibration_for, model_path

_HASHES: dict[tuple[str, int, int], str] = {}
_SOURCE: dict[str, str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 (first 16 hex digits) of a file's bytes, once per process per (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()[:SHORT]
    return _HASHES[key]


# ---- models ----------------------------------------------------------------------------------------------

def _resolve(name) -> Path | None:
    try:
        return model_path(str(name))
    except Exception:  # noqa: BLE001 - a bad name is reported by check_test_cases, not here
        return None


def _edge_files(hps: dict) -> dict[str, Path | None]:
    model = str(hps.get("model", AUTO))
    cal = hps.get("calibration", AUTO)
    names = [EDGE_RGBD, EDGE_RGB] if model == AUTO else [model]
    out: dict[str, Path | None] = {}
    for n in names:
        out[f"model:{n}"] = _resolve(n)
        if hps.get("reasoner") == "grounded":  # the grounded VLM that reads this model's pass
            out.update(_edge_vlm_files(n, hps))
        if cal in NO_CALIBRATION:
            continue
        if cal == AUTO:
            try:
                c = calibration_for(n)
            except Exception:  # noqa: BLE001 - a missing shipped calibration shows as missing
                c = None
            if c is not None:
                out[f"calibration:{n}"] = c
        else:
            out[f"calibration:{cal}"] = _resolve(cal)
    return out


def _edge_vlm_files(model: str, hps: dict) -> dict[str, Path | None]:
    vlm = str(hps.get("vlm_model", AUTO))
    if vlm == AUTO:
        from cepr.edge.models import grounded_for_encoder

        try:
            vlm = grounded_for_encoder(model)
        except Exception:  # noqa: BLE001 - no shipped VLM reads this model: reported when the case is built
            return {}
    return _grounded_files(vlm, str(hps.get("vlm_quant", "q8_0")))


def _grounded_files(vlm: str, quant: str) -> dict[str, Path | None]:
    """A grounded VLM's files (the decoder of ``quant``, the projector, its spec and tokenizer)."""
    from cepr.edge.models import grounded_path

    try:
        folder = grounded_path(vlm)
    except Exception:  # noqa: BLE001 - a bad name is reported by check_test_cases, not here
        return {f"vlm:{vlm}": None}
    return {f"vlm:{vlm}/{f}": folder / f
            for f in (f"decoder-{quant}.gguf", "projector.npz", "grounded.json", "tokenizer.json")}


def _cloud_files(hps: dict) -> dict[str, Path | None]:
    backend = hps.get("backend", "openai")
    if backend == "inprocess" or (backend == "openai" and hps.get("base_url", "auto") == "auto"):
        name = hps.get("expert_model", "cloud")
        return {f"expert_model:{name}": _resolve(name)}
    if backend == "grounded" and hps.get("vlm_model", "auto") != "auto":  # auto: the edge's VLM, counted there
        return _grounded_files(str(hps["vlm_model"]), str(hps.get("vlm_quant", "q8_0")))
    return {}


def _generic_files(hps: dict) -> dict[str, Path | None]:
    out = {}
    for key in ("model", "calibration", "expert_model"):
        v = hps.get(key)
        if isinstance(v, str) and v and Path(v).is_file():
            out[f"{key}:{v}"] = Path(v)
    return out


def model_files(module_type: str, name: str, hps: dict) -> dict[str, Path | None]:
    """``{what: path or None (named but missing)}`` for one module with these hyperparameters."""
    if name == "CeprEdgeModel" or (module_type == "edgemodel" and name.startswith("Cepr")):
        return _edge_files(hps)
    if name == "CeprCloudModel" or (module_type == "cloudmodel" and name.startswith("Cepr")):
        return _cloud_files(hps)
    return _generic_files(hps)


def models_fingerprint(modules: dict) -> dict[str, str]:
    """``{"<module type>/<what>": short sha256 or "missing"}`` over a case's modules (``{type: ModuleSpec}``)."""
    out = {}
    for mtype, spec in modules.items():
        for what, p in model_files(mtype, spec.name, spec.hyperparameters).items():
            out[f"{mtype}/{what}"] = file_sha256(p) if p is not None and p.is_file() else "missing"
    return out


# ---- code ------------------------------------------------------------------------------------------------

def source_hash() -> str:
    """sha256 over the cepr package's Python source (relative path and bytes of every file), once per process."""
    pkg = Path(__file__).resolve().parent.parent
    if "src" not in _SOURCE:
        h = hashlib.sha256()
        for p in sorted(pkg.rglob("*.py")):
            if "__pycache__" in p.parts:
                continue
            h.update(str(p.relative_to(pkg)).encode() + b"\0")
            h.update(p.read_bytes())
        _SOURCE["src"] = h.hexdigest()[:SHORT]
    return _SOURCE["src"]


def git_commit() -> str | None:
    """The git commit of the checkout cepr's source sits in (None outside git); recorded, not in the id."""
    if "git" not in _SOURCE:
        try:
            r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                               capture_output=True, text=True, timeout=10, check=False)
            _SOURCE["git"] = r.stdout.strip() if r.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            _SOURCE["git"] = ""
    return _SOURCE["git"] or None


def code_fingerprint(files: list[Path]) -> dict:
    """cepr's version and source hash, and a hash of the job's own module/metric files (``files``)."""
    h = hashlib.sha256()
    for p in sorted({str(Path(f).resolve()) for f in files}):
        h.update(p.encode() + b"\0" + (file_sha256(p).encode() if Path(p).is_file() else b"missing"))
    return {"cepr": __version__, "source": source_hash(), "job_files": h.hexdigest()[:SHORT]}


# ---- comparison ------------------------------------------------------------------------------------------

PARTS = {"models": "models", "data": "data", "code": "code", "concurrency": "concurrency"}


def in_id(fp: dict) -> dict:
    """The part of a case's fingerprints that goes into its id (everything but informational fields)."""
    data = {k: v for k, v in (fp.get("data") or {}).items() if k in ("fingerprint", "name")}
    code = {k: v for k, v in (fp.get("code") or {}).items() if k != "git_commit"}
    return {"models": fp.get("models"), "data": data, "code": code, "concurrency": fp.get("concurrency")}


def changed_parts(old: dict | None, new: dict) -> list[str]:
    """Which of models / data / code / concurrency differ between two cases' fingerprints (all, for a record
    written before fingerprints were recorded)."""
    if not old:
        return list(PARTS)
    a, b = in_id(old), in_id(new)
    return [p for p in PARTS if a.get(p) != b.get(p)]
