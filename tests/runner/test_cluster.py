"""`cepr run --cluster` and `cepr sweep --cluster` on a real Dask cluster: a scheduler and two workers (each with
its nanny) started as subprocesses bound to 127.0.0.1, the shipped default job on the tiny synthetic set (its cloud
the session's reference expert) and on the real Cloud-Robotics layout (no depth; each worker starts its own expert,
base_url: auto). Checked against local runs of the same cases: every non-timing metric identical; a worker SIGKILLed
mid-shard loses and duplicates nothing; a lost scheduler is a clear error naming its address, with the finished
cases kept and a rerun resuming them (and the finished shards of the case in flight)."""

from __future__ import annotations

import collections
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import copy_default_job, update_yaml
from real_layout import make_real_layout

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
LIMIT = 4
# the synthetic job's cloud settings, for runs compared with each other only: the image sent at the tiny set's own
# 160x120 (the shipped 640x480 is 16 times the pixels for the reference expert to segment), the link's modelled
# transfer time added to the latencies but not waited out
QUICK_CLOUD = {"resolution": "160x120", "emulate_link": False}
# metrics that measure time: measured again on every run, so never compared
TIMING = {"latency_mean", "latency_p50", "latency_p95", "latency_p99", "within_150ms", "within_300ms", "throughput"}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # own process group: the teardown stops the nanny, its worker and the servers the worker started, together
    return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)


class Cluster:
    def __init__(self, folder: Path, workers: int):
        self.procs: list[subprocess.Popen] = []
        sched_file = folder / "scheduler.json"
        self.scheduler = _start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                                 str(sched_file), "--no-dashboard"], folder / "scheduler.log")
        self.procs.append(self.scheduler)
        deadline = time.monotonic() + 60
        while not sched_file.is_file() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline and self.scheduler.poll() is None, (folder / "scheduler.log").read_text()
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        for n in range(workers):
            self.procs.append(_start(["worker", "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                                      "--no-dashboard", "--scheduler-file", str(sched_file)],
                                     folder / f"worker{n}.log"))
        with distributed.Client(self.address, timeout="30s", set_as_default=False) as c:
            c.wait_for_workers(workers, timeout=60)

    def client(self):
        return distributed.Client(self.address, timeout="30s", set_as_default=False)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"), workers=2)
    try:
        yield c
    finally:
        _stop(c.procs)


def cepr(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cepr", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_args(workspace: str, *extra: str, job: str = "benchmarkingjob.yaml") -> list[str]:
    return ["run", "-f", job, "--limit", str(LIMIT), "--no-progress", "--no-report", "--workspace", workspace,
            *extra]


def records(ws: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["id"]: json.loads(p.read_text()) for p in ws.glob("*/*/*/record.json")}


def sample_counts(case_dir: Path) -> collections.Counter:
    return collections.Counter(json.loads(line)["index"] for line in (case_dir / "samples.jsonl").open())


def assert_same_results(local: Path, clustered: Path, subset: bool = False) -> None:
    """The same cases (``subset``: the clustered job is some of the local job's algorithms, and each of its cases
    is one of the local run's), every non-timing metric equal, every sample recorded once with the same answer."""
    a, b = records(local), records(clustered)
    if subset:
        a = {cid: r for cid, r in a.items() if cid in b}
    assert sorted(a) == sorted(b) and a
    for cid, ra in a.items():
        rb = b[cid]
        assert ra["status"] == rb["status"] == "ok", (cid, rb.get("error"))
        assert set(ra["metrics"]) == set(rb["metrics"])
        for m, v in ra["metrics"].items():
            if m not in TIMING:
                assert rb["metrics"][m] == v, (cid, m, v, rb["metrics"][m])
        assert rb["cluster"]["address"] and rb["cluster"]["shards"]
        ca, cb = Path(ra["output_dir"]), Path(rb["output_dir"])
        assert set(sample_counts(cb).values()) == {1} and sorted(sample_counts(cb)) == sorted(sample_counts(ca))
        answers = {}
        for line in (ca / "samples.jsonl").open():
            x = json.loads(line)
            answers[x["index"]] = (x["answer"], x["is_hard"], x.get("correct"), (x.get("cloud") or {}).get("bytes_up"))
        for line in (cb / "samples.jsonl").open():
            x = json.loads(line)
            assert answers[x["index"]] == (x["answer"], x["is_hard"], x.get("correct"),
                                           (x.get("cloud") or {}).get("bytes_up"))
        assert not (cb / "shards").exists()  # dropped once the case is scored


def subset_job(folder: Path, job: str, algorithms: tuple[str, ...], out: str) -> str:
    """``job`` with only ``algorithms`` (their cases keep the ids they have in the whole job), written to
    ``folder / out``; returns ``out``."""
    doc = yaml.safe_load((folder / job).read_text())
    bj = doc["benchmarkingjob"]
    bj["test_object"]["algorithms"] = [a for a in bj["test_object"]["algorithms"] if a["name"] in algorithms]
    assert [a["name"] for a in bj["test_object"]["algorithms"]] == list(algorithms)
    # rank columns of the policies left out would name no column of this job
    bj["rank"]["selected_dataitem"]["hyperparameters"] = ["hard_example_mining-threshold"]
    (folder / out).write_text(yaml.safe_dump(doc))
    return out


def non_timing_rank(path: Path) -> list[dict]:
    rows = list(csv.DictReader(path.open()))
    # rank: ties on accuracy are broken by p95 latency; time: when the row was written; url: the workspace
    return sorted(({k: v for k, v in r.items() if k not in TIMING | {"rank", "time", "url"}} for r in rows),
                  key=lambda r: json.dumps(r, sort_keys=True))


@pytest.fixture(scope="module")
def synth_job(tmp_path_factory, tiny_data, reference_expert):
    """The shipped default job on the tiny synthetic set, run locally once (the reference). Its cloud, the same for
    every run of this job, local or clustered: the session's reference expert (not one started by each run and
    each worker: the real-layout test keeps base_url: auto), sent the image at the set's own 160x120, the link's
    time not waited out (QUICK_CLOUD: timing metrics are never compared)."""
    dest = tmp_path_factory.mktemp("cluster-synth")
    copy_default_job(dest, tiny_data, cloud={**QUICK_CLOUD, **reference_expert})
    p = cepr(dest, *run_args("ws-local"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return dest


def test_cluster_run_gives_the_local_results_with_a_worker_killed_mid_shard(synth_job, dask_cluster):
    """A cluster run (shards of two samples) during which workers executing a shard are SIGKILLed, twice: each
    nanny restarts its worker, the scheduler runs the shard again, and the results are the local run's, each
    sample recorded once."""
    from cepr.runner import cluster as cl

    proc = subprocess.Popen([sys.executable, "-m", "cepr", *run_args(
        "ws-kill", "--cluster", dask_cluster.address, "--shard-size", "2")], cwd=synth_job,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills = []  # (pid, task key, when)
    try:
        with dask_cluster.client() as c:
            deadline = time.monotonic() + 120
            while len(kills) < 2 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
                if not any((synth_job / "ws-kill").glob("*/*/*/shards/*.pkl")):
                    continue  # kill once shards have finished (they must survive)
                try:
                    running = {w: [k for k in ks if k.startswith("cepr-run-")] for w, ks in c.run(cl.executing).items()}
                    worker, keys = next((w, ks) for w, ks in running.items() if ks)
                    pid = c.run(os.getpid, workers=[worker])[worker]
                except (StopIteration, OSError, KeyError, distributed.comm.CommClosedError):
                    continue
                os.kill(pid, signal.SIGKILL)
                kills.append((pid, keys[0], time.time()))
                c.wait_for_workers(2, timeout=60)  # the nanny restarts it
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(kills) == 2, f"saw {len(kills)} shard(s) running on a worker to kill"
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    assert f"Dask cluster {dask_cluster.address}: 2 worker(s)" in out
    assert_same_results(synth_job / "ws-local", synth_job / "ws-kill")  # each sample recorded exactly once
    assert (non_timing_rank(synth_job / "ws-local/cepr-default/rank/all_rank.csv")
            == non_timing_rank(synth_job / "ws-kill/cepr-default/rank/all_rank.csv"))
    recs = records(synth_job / "ws-kill")
    n_lines = sum(sum(sample_counts(Path(r["output_dir"])).values()) for r in recs.values())
    assert n_lines == len(recs) * LIMIT
    for r in recs.values():
        assert r["cluster"]["workers"] == 2 and r["cluster"]["split"] is True
        assert sorted(s["first"] for s in r["cluster"]["shards"]) == list(range(0, LIMIT, 2))
        assert all(s["seconds"] > 0 and s["resources"] for s in r["cluster"]["shards"])
    # each killed shard is recorded once: run again by another process, or (a kill that came just after it
    # ended) by the killed one before the kill; at least one of them really ran again
    reran = 0
    for pid, key, when in kills:
        case, shard = key.split("-")[2], "-".join(key.split("-")[3:6])
        (rec,) = [s for s in recs[case]["cluster"]["shards"] if s["shard"] == shard]
        assert rec["pid"] != pid or rec["finished"] <= when, (key, rec)
        reran += rec["pid"] != pid
    assert reran >= 1, kills
    print(f"kill drill: {len(kills)} workers killed mid-run, {reran} killed shard(s) ran again elsewhere; "
          f"{n_lines} sample lines in {len(recs)} cases, each sample id once")


def test_a_lost_scheduler_names_its_address_and_a_rerun_resumes(synth_job, dask_cluster, tmp_path):
    """The job's cloud-only and threshold algorithms (three cases, shards of one sample, on a cluster of one
    single-threaded worker): its scheduler is SIGKILLed once a case has finished and another has finished shards."""
    job = subset_job(synth_job, "benchmarkingjob.yaml", ("cloud-only", "threshold"), "benchmarkingjob-gone.yaml")
    own = Cluster(tmp_path, workers=1)
    ws = synth_job / "ws-gone"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cepr", *run_args(
            "ws-gone", "--cluster", own.address, "--shard-size", "1", job=job)], cwd=synth_job,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                done = {Path(r["output_dir"]).resolve() for r in records(ws).values() if r["status"] == "ok"}
                # a finished shard of a case not finished (a finished case's shards are dropped just after its
                # record is written: those do not count)
                if done and any(p.parent.parent.resolve() not in done for p in ws.glob("*/*/*/shards/*.pkl")):
                    break
                time.sleep(0.05)
            os.killpg(own.scheduler.pid, signal.SIGKILL)
            t_kill = time.monotonic()
            out, err = proc.communicate(timeout=120)
            t_noticed = time.monotonic() - t_kill
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        _stop(own.procs)
    assert proc.returncode == 2, out[-2000:] + err[-3000:]
    assert f"lost the Dask scheduler at {own.address}" in err and "--resume" in err
    assert t_noticed < 60, t_noticed
    print(f"scheduler lost: noticed after {t_noticed:.1f} s")
    recs = records(ws)
    assert len(recs) == 3
    ok = [r for r in recs.values() if r["status"] == "ok"]
    assert ok and len(ok) < len(recs)
    assert all(r["status"] == "interrupted" and own.address in r["error"] for r in recs.values() if r not in ok)
    partial = [r for r in recs.values() if r not in ok and any((Path(r["output_dir"]) / "shards").glob("*.pkl"))]
    assert partial
    # a rerun on another cluster resumes: finished cases reused, finished shards of the unfinished ones too
    p = cepr(synth_job, *run_args("ws-gone", "--cluster", dask_cluster.address, "--shard-size", "1", "--resume",
                                  job=job))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert f"resumed: {len(ok)} finished test case(s) reused" in p.stdout
    again = records(ws)
    assert all(again[r["id"]]["cluster"]["reused_samples"] > 0 for r in partial)
    assert all(again[r["id"]]["finished"] == r["finished"] for r in ok)  # not run again
    assert_same_results(synth_job / "ws-local", ws, subset=True)


def test_sweep_cache_filled_on_the_cluster_gives_the_local_output(synth_job, dask_cluster):
    base = ["sweep", "-f", "benchmarkingjob.yaml", "--limit", str(LIMIT), "--no-progress", "--table", "all"]
    pl = cepr(synth_job, *base, "--cache", "sc-local", "--out", "sw-local")
    pc = cepr(synth_job, *base, "--cache", "sc-cluster", "--out", "sw-cluster", "--cluster", dask_cluster.address,
              "--shard-size", "1")
    assert pl.returncode == 0 and pc.returncode == 0, pl.stderr[-2000:] + pc.stderr[-3000:]
    assert "Dask cluster" in pc.stdout
    # the curves (APGR, CPT: accuracy and share only) are byte for byte the same; every setting's non-timing columns
    assert (synth_job / "sw-local/curves.csv").read_bytes() == (synth_job / "sw-cluster/curves.csv").read_bytes()
    timing_cols = ("latency", "pareto", "timing")

    def settings(d):
        return [{k: v for k, v in r.items() if not k.startswith(timing_cols)}
                for r in csv.DictReader((synth_job / d / "settings.csv").open())]
    assert settings("sw-local") == settings("sw-cluster")

    def cached(root):
        (d,) = (synth_job / root).iterdir()
        out = {}
        for line in (d / "samples.jsonl").open():
            x = json.loads(line)
            out[x["index"]] = (x["key"], x["task"], x["truth"], x["edge"]["answer"], x["edge"]["confidence"],
                               x["cloud"]["answer"], x["cloud"]["bytes_up"], x["edge_state"],
                               (d / x["mask"]).read_bytes() if x["mask"] else None)
        return d.name, out
    assert cached("sc-local") == cached("sc-cluster")  # same key, same samples, same masks


@pytest.mark.slow
def test_real_layout_on_the_cluster_gives_the_local_results(tmp_path, dask_cluster):
    """The real-set job's edge-only, cloud-only and threshold algorithms (four cases; the link's time not waited
    out) on the real layout (no depth: the RGB-only edge model), locally and on the cluster, with the shipped
    base_url: auto (the local run and each worker start their own reference expert)."""
    make_real_layout(tmp_path / "datasets" / "Cloud-Robotics", n_test=LIMIT, n_train=1)
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, tmp_path / d)
    shutil.copy(REPO / "benchmarkingjob-real.yaml", tmp_path)
    update_yaml(tmp_path / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml",
                {"emulate_link": False})
    job = subset_job(tmp_path, "benchmarkingjob-real.yaml", ("edge-only", "cloud-only", "threshold"),
                     "benchmarkingjob-real-3.yaml")
    pl = cepr(tmp_path, *run_args("ws-local", job=job))
    pc = cepr(tmp_path, *run_args("ws-cluster", "--cluster", dask_cluster.address, "--shard-size", "3", job=job))
    assert pl.returncode == 0 and pc.returncode == 0, pl.stderr[-2000:] + pc.stderr[-3000:]
    assert len(records(tmp_path / "ws-local")) == 4
    assert_same_results(tmp_path / "ws-local", tmp_path / "ws-cluster")


def test_worker_that_cannot_see_a_path_names_it_and_itself(synth_job, dask_cluster, monkeypatch):
    from cepr.runner import cluster as cl
    from cepr.runner.config import parse_job
    from cepr.runner.testcase import build_test_cases

    monkeypatch.chdir(synth_job)
    tc = build_test_cases(parse_job("benchmarkingjob.yaml"))[0]
    mods = {t: m for t, m in tc.modules.items() if t != "dataset_processor"}
    missing = str(synth_job / "nowhere" / "frame.png")
    with dask_cluster.client() as c:
        for task, what in ((cl.ShardTask("k", mods, "inference-then-mining", [], [missing], str(synth_job)), missing),
                           (cl.ShardTask("k", mods, "inference-then-mining", [], [], "/no/such/dir"), "/no/such/dir")):
            fut = c.submit(cl.run_shard, task, pure=False)
            with pytest.raises(cl.ClusterError) as e:
                fut.result(timeout=60)
            assert what in str(e.value) and "worker tcp://127.0.0.1:" in str(e.value)


def test_only_policies_without_state_across_samples_are_split_into_shards():
    from cepr.compat.class_factory import ClassFactory, ClassType
    from cepr.dispatch import policies
    from cepr.dispatch.budget import Budget
    from cepr.runner import cluster as cl

    class MyThreshold(policies.Threshold):  # a subclass may keep state: not split unless it says so
        pass

    class MyStateless(policies.Threshold):
        order_independent = True

    for alias, cls in (("ClusterTestThreshold", policies.Threshold), ("ClusterTestBudget", Budget),
                       ("ClusterTestSub", MyThreshold), ("ClusterTestDeclared", MyStateless)):
        ClassFactory.register(ClassType.HEM, alias=alias)(cls)
    assert cl.order_independent("ClusterTestThreshold") and cl.order_independent("ClusterTestDeclared")
    assert not cl.order_independent("ClusterTestBudget") and not cl.order_independent("ClusterTestSub")
    assert not cl.order_independent("NoSuchPolicy")
    # the per-sample policies of cepr.dispatch declare it; a subclass does not inherit the declaration
    from cepr.dispatch.complexity import Complexity
    from cepr.dispatch.learned import Learned
    from cepr.dispatch.network_aware import NetworkAware
    from cepr.dispatch.risk_aware import RiskAware

    class MyRiskAware(RiskAware):
        pass

    for cls in (RiskAware, Complexity, Learned, NetworkAware, MyRiskAware):
        ClassFactory.register(ClassType.HEM, alias=f"ClusterTest{cls.__name__}")(cls)
        assert cl.order_independent(f"ClusterTest{cls.__name__}") is (cls is not MyRiskAware), cls
    assert cl.plan_shards([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]
    assert cl.plan_shards([0, 1, 2, 3, 4], None) == [[0, 1, 2, 3, 4]] and cl.plan_shards([], 3) == []


def test_unreachable_scheduler_and_missing_package_are_clear_errors(monkeypatch):
    from cepr.errors import CeprError
    from cepr.runner import cluster as cl

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.monotonic()
    with pytest.raises(cl.ClusterError, match=f"no Dask scheduler answered at tcp://127.0.0.1:{port} within 1 s"):
        cl.connect(f"127.0.0.1:{port}", timeout_s=1)
    assert time.monotonic() - t0 < 20
    monkeypatch.setitem(sys.modules, "distributed", None)  # as when the package is not installed
    with pytest.raises(CeprError, match=r"cloud-edge-perception-reasoning\[cluster\]"):
        cl.connect("tcp://127.0.0.1:8786")


def test_import_cepr_and_the_cli_parser_do_not_import_dask():
    code = ("import sys, cepr, cepr.runner.job, cepr.sweep.cache; from cepr.cli import build_parser; build_parser(); "
            "print([m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert p.stdout.strip() == "[]"


def test_cli_help_shows_a_cluster_example(capsys):
    from cepr.cli import build_parser

    for cmd in ("run", "sweep"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "--help"])
        assert f"cepr {cmd} -f benchmarkingjob.yaml --cluster tcp://" in capsys.readouterr().out
