"""What a benchmark figure was measured on: CPU model, cores, the instruction sets INT8 speed depends on,
load, library versions. Printed beside every ratio, because the same model gains 1.1x on one CPU and 3x on
another (VNNI: ``avx512_vnni`` / ``avx_vnni`` give ONNX Runtime's u8s8 dot products one instruction)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib.metadata import PackageNotFoundError, version

# the flags that decide how fast ONNX Runtime's INT8 and FP32 kernels are on x86
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _version(module: str) -> str | None:
    try:
        return version(module)
    except PackageNotFoundError:
        return None


def machine_info() -> dict:
    """CPU model, cores this process may use, the INT8-relevant CPU flags, VNNI yes/no, load averages,
    Python / onnxruntime / numpy / OpenCV versions and the date (UTC)."""
    model, flags = _cpuinfo()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "flags": [f for f in INT8_FLAGS if f in flags],
            "vnni": bool({"avx512_vnni", "avx_vnni"} & flags), "loadavg": load,
            "python": platform.python_version(),
            "versions": {m: _version(m) for m in ("onnxruntime", "numpy", "opencv-python-headless")},
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def format_machine(m: dict) -> str:
    v = ", ".join(f"{k} {x}" for k, x in m.get("versions", {}).items() if x)
    return (f"{m['cpu']}, {m['cores']} core(s); flags: {' '.join(m.get('flags', [])) or 'none of ' + '/'.join(INT8_FLAGS)}"
            f" (VNNI {'yes' if m.get('vnni') else 'no'}); load {m.get('loadavg')}; {v}; {m['date']}")
