"""The package keeps its layers (docs/architecture.md): import-linter's contract in pyproject.toml holds, no two
modules import each other (directly or round a longer loop, imports inside functions included), and the layer
diagram in docs/architecture.md lists the same layers as the contract."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "cloud-edge-perception-reasoning"

pytest.importorskip("importlinter", reason="needs the test extra (import-linter)")


def _contract_layers() -> list[str]:
    import tomllib

    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in doc["tool"]["importlinter"]["contracts"] if c["id"] == "layers"]
    return contract["layers"]


def test_the_layers_contract_holds():
    """lint-imports, as a user runs it; its report (the offending imports, by line) is the failure message."""
    import subprocess

    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")
    p = subprocess.run([sys.executable, "-c", code, str(ROOT / "pyproject.toml")], cwd=SRC, capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode == 0 and "0 broken" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), over every import grimp sees."""
    adj = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for m in sorted(adj):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles():
    import grimp

    cycles = _cycles(grimp.build_graph("cepr", cache_dir=None))
    assert cycles == [], f"modules that import each other: {cycles}"


def test_the_architecture_page_draws_the_contracts_layers():
    page = (ROOT / "docs" / "architecture.md").read_text()
    m = re.search(r"<!-- layers:begin -->\n```\n(.*?)```\n<!-- layers:end -->", page, re.DOTALL)
    assert m, "docs/architecture.md has no layer diagram between <!-- layers:begin --> and <!-- layers:end -->"
    drawn = []
    for line in m.group(1).splitlines():
        names = re.findall(r"\bcepr\.(\w+)", line.split("  ")[0] if "  " in line.strip() else line)
        if names:
            drawn.append(" | ".join(names))
    assert drawn == _contract_layers(), (
        "docs/architecture.md's layer diagram and pyproject.toml's import-linter layers differ:\n"
        f"drawn:    {drawn}\ncontract: {_contract_layers()}")
