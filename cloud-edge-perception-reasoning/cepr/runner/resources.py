"""CPU time and peak memory of the runner process and of the cloud servers it started, per test case.

Read from ``/proc`` (Linux); elsewhere the figures are None. CPU seconds are the difference across the case
(user + system), divided by its samples; peak memory is the process's high-water mark so far (``VmHWM``), which a
case can only raise: the largest a case needed, given what ran before it in the same process.
"""

from __future__ import annotations

import os
from pathlib import Path

from cepr.servers.autoserve import server_pids


def _usage(pid: int) -> tuple[float, float] | None:
    """(CPU seconds so far, peak resident MB) of a process, or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        peak_kb = next((int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("VmHWM:")), None)
    except (OSError, ValueError, IndexError):
        return None
    return cpu, (peak_kb / 1024 if peak_kb is not None else None)


def snapshot() -> dict[str, tuple[float, float] | None]:
    """Usage of this process (the runner: edge model, dispatch, metrics) and of every auto-started cloud server."""
    out = {"runner (edge, dispatch, metrics)": _usage(os.getpid())}
    for pid in server_pids():
        out[f"cloud server pid {pid}"] = _usage(pid)
    return out


def per_case(before: dict, after: dict, samples: int) -> dict:
    """CPU seconds per sample and peak MB of each process, between two snapshots."""
    out = {}
    for name, now in after.items():
        then = before.get(name)
        if now is None:
            out[name] = None
            continue
        cpu = now[0] - (then[0] if then else 0.0)
        out[name] = {"cpu_s_per_sample": round(cpu / samples, 5) if samples else None,
                     "peak_rss_mb": round(now[1], 1) if now[1] is not None else None}
    return out
