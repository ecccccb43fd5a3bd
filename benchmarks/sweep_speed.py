"""Speed of the offline router sweep (DESIGN §7 target: 50 policy settings over 10k cached samples in <= 10 s).

The 10k-sample cache is a real sweep cache REPLICATED: its samples (edge and cloud results as the models produced
them) are repeated, in order, until there are ``--samples`` of them, each copy's sample key suffixed ``#<copy>`` so
that Random's per-key draws differ between copies; the masks are shared with the source cache. The replicated
cache is written to disk and read back, so the timing includes loading it. Both evaluation paths are timed on the
same settings: vectorised (threshold-style policies as array operations) and per sample (every policy called on
every cached edge result, as the paradigm calls it).

    cepr sweep -f benchmarkingjob.yaml --no-progress          # makes the source cache (150 synthetic frames)
    python benchmarks/sweep_speed.py --source workspace/cepr-default/sweep-cache/<key>
    python benchmarks/sweep_speed.py -f benchmarkingjob.yaml   # finds (or fills) the job's cache itself
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from cepr.bench.machine import machine_info


def replicate(source: Path, dest: Path, n: int) -> str:
    """Write a cache of ``n`` samples at ``dest``: the source cache's samples repeated; returns what was done."""
    from cepr.sweep.cache import META, SAMPLES, read_lines, read_meta

    lines = [x for _, x in sorted(read_lines(source).items()) if x.get("truth") is not None]
    if not lines:
        raise SystemExit(f"{source}: no cached sample with a ground truth")
    dest.mkdir(parents=True, exist_ok=True)
    meta = read_meta(source)
    copies = -(-n // len(lines))
    meta["note"] = f"replicated: {len(lines)} cached samples of {source} x {copies}, first {n} kept"
    (dest / META).write_text(json.dumps(meta, default=str))
    with (dest / SAMPLES).open("w") as fh:
        for i in range(n):
            x = json.loads(json.dumps(lines[i % len(lines)]))
            copy = i // len(lines)
            key = f"{x['key']}#{copy}"
            x.update(index=i, key=key)
            x["edge"]["key"] = key
            x["cloud"]["key"] = key
            if x.get("mask"):
                x["mask"] = str((source / x["mask"]).resolve())
            fh.write(json.dumps(x) + "\n")
    return meta["note"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--source", help="an existing sweep cache folder (default: the cache of -f's job)")
    ap.add_argument("-f", "--file", default="benchmarkingjob.yaml", help="job whose cache to use (or fill)")
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--spec", help="sweep spec (default: the built-in 50 settings)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each path; the median is reported")
    ap.add_argument("--target-s", type=float, default=10.0)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)

    import numpy as np

    from cepr.sweep.cache import fill_cache, load_cache, resolve_source
    from cepr.sweep.report import run_sweep
    from cepr.sweep.spec import load_spec

    if a.source:
        source = Path(a.source)
    else:
        source = fill_cache(resolve_source(a.file), progress=True).dir
    spec = load_spec(a.spec)
    tmp = Path(tempfile.mkdtemp(prefix="sweep-speed-"))
    try:
        note = replicate(source, tmp / "cache", a.samples)
        runs: dict[str, list[float]] = {"load": [], "vectorised": [], "per-sample": []}
        detail = {}
        for _ in range(a.repeat):
            t = time.perf_counter()
            data = load_cache(tmp / "cache")
            runs["load"].append(time.perf_counter() - t)
            data.note = note
            for path, vec in (("vectorised", True), ("per-sample", False)):
                fresh = load_cache(tmp / "cache")  # no column built by the other path
                t = time.perf_counter()
                res = run_sweep(fresh, spec, vectorise=vec)
                runs[path].append(time.perf_counter() - t)
                detail[path] = res.timing.as_dict()
                detail[path]["settings"] = len(res.rows)
        med = {k: float(np.median(v)) for k, v in runs.items()}
        fig = {
            "what": "cepr sweep speed: settings x cached samples, evaluated without calling a model",
            "command": "python benchmarks/sweep_speed.py " + " ".join(argv if argv is not None else
                                                                       __import__("sys").argv[1:]),
            "machine": machine_info(),
            "cache": {"samples": data.n, "note": note, "source": str(source)},
            "settings": detail["vectorised"]["settings"], "repeat": a.repeat,
            "median_s": {k: round(v, 3) for k, v in med.items()},
            "total_s": {"vectorised": round(med["load"] + med["vectorised"], 3),
                        "per-sample": round(med["load"] + med["per-sample"], 3)},
            "target_s": a.target_s, "detail": detail,
        }
        fig["meets_target"] = {k: v <= a.target_s for k, v in fig["total_s"].items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {fig['machine']['cpu']}, {fig['machine']['cores']} cores, Python {fig['machine']['python']}")
    print(f"cache: {data.n} samples ({note})")
    print(f"{fig['settings']} settings, median of {a.repeat}: load {med['load']:.3f} s; vectorised "
          f"{med['vectorised']:.3f} s; per-sample {med['per-sample']:.3f} s "
          f"({detail['per-sample']['per_sample_calls']} policy calls, "
          f"{detail['per-sample']['per_sample_us_per_call']} us each)")
    for k, v in fig["total_s"].items():
        print(f"  {k:10s} load + sweep {v:.3f} s: {'meets' if fig['meets_target'][k] else 'MISSES'} the "
              f"{a.target_s:g} s target")
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=1))
    return 0 if fig["meets_target"]["vectorised"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
