"""ONNX Runtime execution providers chosen by name: ``cpu`` (the default), ``cuda``, ``tensorrt``...

A setting is one name, or a list tried in order, each item a name or ``{name: {provider options}}`` (such as
``{cuda: {device_id: 1}}``). Short names and ONNX Runtime's own names (``CUDAExecutionProvider``) are both
accepted, in any case. :func:`resolve_providers` turns a setting into ONNX Runtime's ``providers`` list, with
``CPUExecutionProvider`` appended as the fallback for the operators a GPU provider does not take (and CUDA after
TensorRT, as ONNX Runtime advises, when the build has it):

* one provider (``cuda``) that this onnxruntime build lacks is an error naming what was asked for, what the build
  has and what to install: a CUDA run is never quietly measured on the CPU;
* a list (``[cuda, cpu]``) opts into falling back: the providers the build lacks are skipped with a logged
  warning, and it is an error only when none of those listed is available.

:func:`check_session` then compares the providers the session really got (``session.get_providers()``) with the
plan: a build can have CUDA and still fail to create it on a machine without a GPU or CUDA libraries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import onnxruntime as ort

from cepr.errors import CeprError, did_you_mean

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
# short names -> ONNX Runtime's provider names
ALIASES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
# what to install for a provider this build lacks
INSTALL_HINTS = {
    "CUDAExecutionProvider": "pip uninstall onnxruntime && pip install onnxruntime-gpu (CUDA 12 and cuDNN 9 "
                             "libraries, an NVIDIA GPU and driver)",
    "TensorrtExecutionProvider": "pip uninstall onnxruntime && pip install onnxruntime-gpu, plus NVIDIA TensorRT "
                                 "(pip install tensorrt) and an NVIDIA GPU",
    "ROCMExecutionProvider": "an onnxruntime build with ROCm (onnxruntime-rocm) and an AMD GPU",
    "MIGraphXExecutionProvider": "an onnxruntime build with MIGraphX and an AMD GPU",
    "OpenVINOExecutionProvider": "pip install onnxruntime-openvino",
    "DmlExecutionProvider": "pip install onnxruntime-directml (Windows)",
    "CoreMLExecutionProvider": "the onnxruntime wheel for macOS",
}
DEFAULT = "cpu"


def _available() -> list[str]:
    return list(ort.get_available_providers())


def _known() -> list[str]:
    """Every provider name ONNX Runtime knows (built into this wheel or not), plus our short names."""
    try:
        import onnxruntime as ort

        full = list(ort.get_all_providers())
    except (ImportError, AttributeError):
        full = []
    return list(ALIASES) + sorted(set(full) | set(ALIASES.values()))


def short_name(provider: str) -> str:
    """``CUDAExecutionProvider`` -> ``cuda`` (the first short name), or the name as given."""
    return next((k for k, v in ALIASES.items() if v == provider), provider)


def provider_name(name) -> str:
    """ONNX Runtime's name of one provider name (short or full, any case); a CeprError with a "did you mean"
    for an unknown one."""
    if not isinstance(name, str) or not name.strip():
        raise CeprError(f"an execution provider is a name such as 'cpu' or 'cuda', got {name!r}")
    key = name.strip()
    if key.lower() in ALIASES:
        return ALIASES[key.lower()]
    known = _known()
    folded = {k.lower(): k for k in known if k not in ALIASES}
    if key.lower() in folded:
        return folded[key.lower()]
    short = ", ".join(ALIASES)
    raise CeprError(f"unknown execution provider {name!r}{did_you_mean(key, known)} (short names: {short}; or "
                    "ONNX Runtime's own names, such as CUDAExecutionProvider)")


def parse_providers(spec) -> list[tuple[str, dict]]:
    """``[(ONNX Runtime name, options)]`` of a setting, validated (names and option mappings), without looking
    at what this build has. Accepts ``"cpu"``, ``"cuda,cpu"``, ``["cuda", "cpu"]``, ``[{"cuda": {"device_id":
    0}}, "cpu"]``, ``[("cuda", {...}), "cpu"]`` and ``{"cuda": {...}, "cpu": {}}``. Duplicates are dropped."""
    if spec is None:
        spec = DEFAULT
    if isinstance(spec, str):
        items = [s for s in (p.strip() for p in spec.split(",")) if s]
        if not items:
            raise CeprError("providers is empty: name at least one, such as 'cpu'")
    elif isinstance(spec, Mapping):
        items = [{k: v} for k, v in spec.items()]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise CeprError(f"providers must be a name or a list of names, got {type(spec).__name__} {spec!r}")
    if not items:
        raise CeprError("providers is an empty list: name at least one, such as 'cpu'")
    out: list[tuple[str, dict]] = []
    for item in items:
        if isinstance(item, Mapping):
            if len(item) != 1:
                raise CeprError(f"a provider with options is one name and its options, such as "
                                f"{{cuda: {{device_id: 0}}}}; got {dict(item)!r}")
            (name, opts), = item.items()
        elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], Mapping):
            name, opts = item
        else:
            name, opts = item, {}
        opts = {} if opts is None else opts
        if not isinstance(opts, Mapping):
            raise CeprError(f"the options of provider {name!r} must be a mapping, such as {{device_id: 0}}; "
                            f"got {opts!r}")
        full = provider_name(name)
        if full not in (n for n, _ in out):
            out.append((full, {str(k): v for k, v in opts.items()}))
    return out


@dataclass
class ProviderPlan:
    """What to ask ONNX Runtime for: ``providers`` and ``provider_options`` (CPU last), what was requested and
    whether falling back was opted into (more than one provider listed)."""

    requested: list[str]  # ONNX Runtime names, as listed
    providers: list[str]  # what the session is given
    provider_options: list[dict]
    fallback: bool

    @property
    def first(self) -> str:
        """The provider the plan means to run (the first available one that was listed)."""
        return self.providers[0]

    def session_kwargs(self) -> dict:
        return {"providers": self.providers, "provider_options": self.provider_options}


def _missing_message(requested: list[str], available: list[str]) -> str:
    names = ", ".join(short_name(r) for r in requested)
    hints = "; ".join(f"for {short_name(r)}: {INSTALL_HINTS[r]}" for r in requested if r in INSTALL_HINTS)

    return (f"execution provider {names} requested, but this onnxruntime build ({ort.__version__}, "
            f"{ort.get_device()}) has only {', '.join(available)}"
            + (f". To run it, install {hints}" if hints else "")
            + ". Or list a fallback, e.g. providers: [" + ", ".join(short_name(r) for r in requested)
            + ", cpu], or use providers: cpu")


def resolve_providers(spec=DEFAULT, available: list[str] | None = None, warn: bool = True) -> ProviderPlan:
    """The plan for a setting (see the module's docstring). ``available`` defaults to
    ``onnxruntime.get_available_providers()``; ``warn=False`` keeps a fallback quiet (an up-front check)."""
    parsed = parse_providers(spec)
    requested = [n for n, _ in parsed]
    if available is None:  # every build has the CPU: the default needs no import of onnxruntime
        available = [CPU] if requested == [CPU] else _available()
    available = list(available)
    fallback = len(parsed) > 1
    kept = [(n, o) for n, o in parsed if n in available]
    if not kept or (not fallback and len(kept) < len(parsed)):
        raise CeprError(_missing_message([n for n in requested if n not in available], available))
    skipped = [n for n in requested if n not in available]
    if skipped and warn:
        log.warning("execution provider %s not in this onnxruntime build (it has %s): falling back to %s",
                    ", ".join(short_name(s) for s in skipped), ", ".join(available), short_name(kept[0][0]))
    names = [n for n, _ in kept]
    trt, cuda = ALIASES["tensorrt"], ALIASES["cuda"]
    if trt in names and cuda not in names and cuda in available:  # ONNX Runtime's advice: TensorRT, CUDA, CPU
        kept.insert(names.index(trt) + 1, (cuda, {}))
    if CPU not in (n for n, _ in kept) and CPU in available:
        kept.append((CPU, {}))  # the operators a GPU provider does not take
    return ProviderPlan(requested, [n for n, _ in kept], [o for _, o in kept], fallback)


def check_session(plan: ProviderPlan, session_providers: list[str], what: str = "the model") -> str:
    """The provider that runs (the session's first); a CeprError when the planned one could not be created (a
    CUDA build on a machine without a GPU) and no fallback was listed, a warning when one was."""
    got = list(session_providers)
    ran = got[0] if got else CPU
    if ran != plan.first:
        msg = (f"{what}: ONNX Runtime could not create execution provider {short_name(plan.first)} (the session "
               f"got {', '.join(got) or 'none'}); is there a GPU, and are its driver and libraries installed?")
        if not plan.fallback:
            raise CeprError(msg + " List a fallback (e.g. providers: [cuda, cpu]) to run on the CPU instead")
        log.warning("%s: falling back to %s", msg, short_name(ran))
    return ran
