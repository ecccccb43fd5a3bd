"""The distribution declares what the cloud code imports (checked against importlib.metadata, offline)."""

import ast
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import cepr

DIST = "cloud-edge-perception-reasoning"
# The first openai release whose SDK runs on httpx2 (2.54.0, the last 2.x, requires httpx; 3.0.0 requires
# httpx2>=2.7.0): read off both wheels' METADATA. openai_backend builds its byte-counting transport on httpx2.
FIRST_OPENAI_ON_HTTPX2 = Version("3.0.0")
SRC = Path(cepr.__file__).parent


def requirements() -> dict[str | None, dict[str, Requirement]]:
    """{extra or None for the core: {distribution name: requirement}}."""
    out: dict[str | None, dict[str, Requirement]] = {}
    for line in md.requires(DIST) or ():
        req = Requirement(line)
        extra = next((e for e in ("train", "serve", "test", "dev") if req.marker and
                      req.marker.evaluate({"extra": e})), None)
        out.setdefault(extra, {})[req.name.lower().replace("_", "-")] = req
    return out


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of every module the file imports (at module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "cepr" and n != "__future__"}


def distributions_of(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in md.packages_distributions().get(module, ())}


@pytest.mark.parametrize("path,extras", [
    (SRC / "cloud" / "openai_backend.py", (None,)),
    (SRC / "serve" / "cloud_server.py", (None, "serve")),
])
def test_every_imported_package_is_declared(path, extras):
    reqs = requirements()
    declared = set().union(*(reqs.get(e, {}) for e in extras))
    imported = third_party_imports(path)
    assert imported, path
    for module in imported:
        dists = distributions_of(module)
        assert dists, f"{module} (imported by {path.name}) is not installed"
        assert dists & declared, f"{path.name} imports {module} ({dists}), which {extras} do not declare"


def test_openai_requirement_refuses_sdks_without_httpx2():
    core = requirements()[None]
    assert "httpx2" in third_party_imports(SRC / "cloud" / "openai_backend.py")
    spec = core["openai"].specifier
    lower = [Version(s.version) for s in spec if s.operator in (">=", ">", "==", "~=")]
    assert lower and max(lower) >= FIRST_OPENAI_ON_HTTPX2, f"openai{spec} admits an SDK built on httpx"
    assert not spec.contains("2.54.0") and not spec.contains("1.40.0")
    installed = Version(md.version("openai"))
    assert spec.contains(installed)
    # the installed SDK does run on httpx2, and the version of it that we name
    sdk_needs = {Requirement(r).name for r in md.requires("openai") or () if "extra ==" not in r}
    assert "httpx2" in sdk_needs
    assert core["httpx2"].specifier.contains(md.version("httpx2"))


def test_importing_cepr_and_the_backend_module_loads_no_sdk_or_server():
    code = ("import sys, cepr, cepr.cloud.openai_backend, cepr.cloud.parsing; "
            "print(sorted(m for m in ('openai', 'httpx2', 'fastapi', 'prometheus_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
