"""Overhead of `cepr run --cluster` per test case, against a local run of the same cases on this machine.

Starts a Dask scheduler and ``--workers`` workers (one thread each, with nannies) on 127.0.0.1, then runs the job
twice with the same ``--limit``: locally (`cepr run`) and on the cluster (`cepr run --cluster`), each into a fresh
workspace, and reads the case records:

* ``t_case`` (local): a case's wall time in the local run (record ``wall_s``: its samples, one after another);
* ``t_task`` (cluster): a case's time on the workers (the sum of its shards' ``seconds``, each measured on the
  worker from the task's start: module build, the samples), and the job's wall time on each side;
* ``build``: of ``t_task``, the time a worker spent building the case's modules (0 where it had them loaded);
* **overhead per case** = (workers x cluster job wall - local job wall) / cases: the worker-seconds a case costs on
  the cluster beyond its local time (task transfer, a model load per task, scheduling, the driver's writing, idle
  workers at the end). ``t_task - t_case`` is the part spent inside the tasks.

    python benchmarks/cluster_overhead.py -f benchmarkingjob.yaml --limit 20 --workers 2
    python benchmarks/cluster_overhead.py -f benchmarkingjob.yaml --limit 20 --shard-size 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cepr.bench.machine import format_machine, machine_info


def start_cluster(folder: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    sched_file = folder / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--scheduler-file", str(sched_file), "--no-dashboard"],
                              stdout=(folder / "scheduler.log").open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)]
    deadline = time.monotonic() + 60
    while not sched_file.is_file() or not sched_file.read_text().strip():
        if time.monotonic() > deadline:
            raise SystemExit(f"the scheduler did not start: {(folder / 'scheduler.log').read_text()[-2000:]}")
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    for n in range(workers):
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", "--host", "127.0.0.1", "--nworkers",
                                       "1", "--nthreads", "1", "--no-dashboard", "--scheduler-file", str(sched_file)],
                                      stdout=(folder / f"worker{n}.log").open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
    from distributed import Client

    with Client(address, timeout="30s", set_as_default=False) as c:
        c.wait_for_workers(workers, timeout=60)
    return address, procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run(job: str, workspace: Path, limit: int, extra: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", job, "--limit", str(limit), "--no-progress",
                        "--no-report", "--workspace", str(workspace), *extra], capture_output=True, text=True,
                       check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"cepr run {' '.join(extra)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    recs = {}
    for f in workspace.glob("*/*/*/record.json"):
        r = json.loads(f.read_text())
        recs[r["id"]] = r
    return wall, recs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("-f", "--file", default="benchmarkingjob.yaml", help="the job (run from the repository root)")
    ap.add_argument("--limit", type=int, default=20, help="test samples per case")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=None, help="cepr run --shard-size (default: its own)")
    ap.add_argument("--json", help="also write the numbers here")
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cepr-cluster-bench-") as tmp:
        tmp = Path(tmp)
        address, procs = start_cluster(tmp, a.workers)
        try:
            extra = ["--cluster", address] + (["--shard-size", str(a.shard_size)] if a.shard_size else [])
            t_cluster, rc = run(a.file, tmp / "ws-cluster", a.limit, extra)
            t_local, rl = run(a.file, tmp / "ws-local", a.limit, [])
        finally:
            stop(procs)
    cases = sorted(rl)
    assert sorted(rc) == cases, "the two runs ran different cases"
    t_case = [rl[c]["wall_s"] for c in cases]
    t_task = [sum(s["seconds"] for s in rc[c]["cluster"]["shards"]) for c in cases]
    t_build = [sum(s.get("build_s", 0.0) for s in rc[c]["cluster"]["shards"]) for c in cases]
    t_fixed_local = t_local - sum(t_case)  # process start, pre-flight, metrics, rank files
    shards = sum(len(rc[c]["cluster"]["shards"]) for c in cases)
    same = all(rl[c]["metrics"].get("accuracy") == rc[c]["metrics"].get("accuracy") for c in cases)
    n = len(cases)
    out = {
        "machine": format_machine(machine_info()) + " (load at the end)",
        "job": a.file, "cases": n, "samples_per_case": a.limit, "workers": a.workers, "shards": shards,
        "local_job_wall_s": round(t_local, 2), "cluster_job_wall_s": round(t_cluster, 2),
        "t_case_local_mean_s": round(statistics.mean(t_case), 3),
        "t_task_cluster_mean_s": round(statistics.mean(t_task), 3),
        "in_task_overhead_per_case_s": round(statistics.mean(t_task) - statistics.mean(t_case), 3),
        "module_build_per_case_s": round(statistics.mean(t_build), 3),
        "t_sample_local_s": round(sum(t_case) / (n * a.limit), 4),
        "t_sample_cluster_s": round((sum(t_task) - sum(t_build)) / (n * a.limit), 4),
        "fixed_local_s": round(t_fixed_local, 2),
        "overhead_per_case_worker_s": round((a.workers * t_cluster - t_local) / n, 3),
        "speedup": round(t_local / t_cluster, 3),
        "ideal_makespan_s": round(math.ceil(n / a.workers) * statistics.mean(t_case), 2),
        "accuracy_identical": same,
    }
    for k, v in out.items():
        print(f"{k:32s} {v}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
