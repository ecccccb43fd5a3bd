#!/usr/bin/env python3
"""Container entrypoint: environment variables -> a ``cepr serve edge`` or ``cepr serve cloud`` command line.

The same image runs standalone (plain Kubernetes, docker run) and as a Sedna joint-inference worker. Sedna's
JointInferenceService controller (kubeedge/sedna v0.7.0, pkg/globalmanager/controllers/jointinference) injects:

- into the edge worker: ``BIG_MODEL_IP`` (the cloud worker's Service, ``<service>-cloud.<namespace>``),
  ``BIG_MODEL_PORT`` (5000), ``HEM_NAME`` and ``HEM_PARAMETERS`` (the hard example mining algorithm and its
  ``[{"key": ..., "value": ...}]`` as JSON, values as strings), ``LC_SERVER``;
- into the cloud worker: ``BIG_MODEL_BIND_PORT`` (5000, the port its Service targets);
- into both: ``MODEL_URL`` (the container path of the Sedna Model's file), ``NAMESPACE``, ``SERVICE_NAME``,
  ``WORKER_NAME``.

The edge service takes its dispatch policy and cloud settings from a job YAML (``-f``, ``--algorithm``) and has no
flag for the cloud's address or the policy. So when any of those variables (or ``CEPR_CLOUD_URL``,
``CEPR_EDGE_MODEL``) asks for a change, this script writes a copy of the job and of the chosen algorithm file
with the change made (``CEPR_WORK_DIR``, default /tmp/cepr-deploy) and runs ``cepr serve edge`` on that copy.
Without them it runs the job as it is.

Usage: entrypoint.py edge|cloud [--print] [EXTRA CEPR ARGS...]   (--print: print the command as JSON, run nothing)
Every variable is listed in docs/deploy.md.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

REFERENCE_EXPERT_MODEL = "cepr-reference-expert-not-an-llm"  # cepr.cloud.expert.EXPERT_MODEL_NAME
TRUE = ("1", "true", "yes", "on")


class EntrypointError(Exception):
    """A setting the container cannot run with; the message names the variable."""


def _get(env: dict, name: str) -> str | None:
    v = env.get(name)
    return v if v not in (None, "") else None


def _abs(value: str) -> str:
    """Ianvs resolves a YAML path against the current directory; the copy must point at the same file."""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (Path.cwd() / p).resolve())


def _model_file(env: dict, var: str) -> str | None:
    """MODEL_URL (Sedna's Model, downloaded or mounted before the container starts) or None."""
    url = _get(env, "MODEL_URL")
    if url is None:
        return None
    if not Path(url).is_file():
        raise EntrypointError(
            f"MODEL_URL={url!r} (the Sedna Model's file in this container) does not exist: put the ONNX file at the "
            f"Model's url on the node (and its .calibration.json beside it, for the edge), or set {var}=job to use "
            "the model the image ships")
    return url


def hem_parameters(text: str | None) -> dict:
    """Sedna's HEM_PARAMETERS, ``[{"key": "threshold", "value": "0.6"}]``, as ``{"threshold": 0.6}`` (values are
    strings in Sedna's CRD; YAML reads numbers, booleans and lists out of them)."""
    import yaml

    if text is None:
        return {}
    what = f'HEM_PARAMETERS={text!r} is not a JSON list of {{"key": ..., "value": ...}}'
    try:
        items = json.loads(text)
    except ValueError as e:
        raise EntrypointError(f"{what}: {e}") from None
    if not isinstance(items, list) or not all(isinstance(it, dict) and {"key", "value"} <= set(it) for it in items):
        raise EntrypointError(what)
    return {str(it["key"]): yaml.safe_load(str(it["value"])) for it in items}


def _set_hp(module: dict, name: str, value) -> None:
    """Set one hyperparameter of an Ianvs module (replacing a listed one: the first value is what deploys)."""
    hps = module.setdefault("hyperparameters", []) or []
    module["hyperparameters"] = [h for h in hps if name not in h] + [{name: {"values": [value]}}]


def edge_overrides(env: dict) -> dict:
    """What the environment changes in the job: {"cloud": {...}, "policy": (name, params), "edge_model": path}."""
    out: dict = {}
    url = _get(env, "CEPR_CLOUD_URL")
    if url is None and _get(env, "BIG_MODEL_IP"):
        url = f"http://{env['BIG_MODEL_IP']}:{_get(env, 'BIG_MODEL_PORT') or '5000'}/v1"
    if url is not None:
        out["cloud"] = {"base_url": url, "link": _get(env, "CEPR_LINK") or "none"}
    if _get(env, "HEM_NAME") or _get(env, "HEM_PARAMETERS"):
        out["policy"] = (_get(env, "HEM_NAME"), hem_parameters(_get(env, "HEM_PARAMETERS")))
    model = _get(env, "CEPR_EDGE_MODEL")
    if model is None:
        model = _model_file(env, "CEPR_EDGE_MODEL")
    if model is not None and model != "job":
        out["edge_model"] = model
    return out


def derive_job(job: str, algorithm: str | None, over: dict, env: dict, work_dir: Path) -> tuple[Path, str]:
    """Write the job and its chosen algorithm with ``over`` applied; return (job copy, algorithm name)."""
    import yaml

    from cepr.serve.edge_service import load_deployment

    dep = load_deployment(job, algorithm)  # the same default algorithm as cepr serve edge, and its errors
    doc = yaml.safe_load(Path(job).read_text())
    bj = doc["benchmarkingjob"]
    entry = next(a for a in bj["test_object"]["algorithms"] if a["name"] == dep.algorithm)
    algo_doc = yaml.safe_load(Path(entry["url"]).read_text())
    modules = algo_doc["algorithm"]["modules"]
    for m in modules:
        if m.get("url"):
            m["url"] = _abs(m["url"])
        for h in m.get("hyperparameters") or []:
            if "other_hyperparameters" in h:
                h["other_hyperparameters"]["values"] = [_abs(v) for v in h["other_hyperparameters"]["values"]]
        if m["type"] == "hard_example_mining" and "policy" in over:
            name, params = over["policy"]
            if params or (name is not None and name != m["name"]):  # another policy: its own parameters only
                m["hyperparameters"] = [{k: {"values": [v]}} for k, v in params.items()]
            if name is not None:
                m["name"] = name
        if m["type"] == "cloudmodel" and "cloud" in over:
            for k, v in over["cloud"].items():
                _set_hp(m, k, v)
            # a URL needs the served model's name; the job's (when it names one) else the reference expert's
            model = _get(env, "CEPR_CLOUD_MODEL")
            if model is None and (dep.cloud_hps.get("base_url", "auto") == "auto" or "model" not in dep.cloud_hps):
                model = REFERENCE_EXPERT_MODEL
            if model is not None:
                _set_hp(m, "model", model)
        if m["type"] == "edgemodel" and "edge_model" in over:
            _set_hp(m, "model", over["edge_model"])
    work_dir.mkdir(parents=True, exist_ok=True)
    algo_path = work_dir / f"algorithm-{dep.algorithm}.yaml"
    algo_path.write_text(yaml.safe_dump(algo_doc, sort_keys=False))
    for key in ("testenv", "workspace"):
        if bj.get(key):
            bj[key] = _abs(bj[key])
    bj["test_object"]["algorithms"] = [{"name": dep.algorithm, "url": str(algo_path)}]
    if isinstance(bj.get("rank"), dict) and isinstance(bj["rank"].get("selected_dataitem"), dict):
        # the job's rank may name a column of the replaced policy's parameters; a service ranks nothing
        bj["rank"]["selected_dataitem"]["hyperparameters"] = ["all"]
    job_path = work_dir / "job.yaml"
    job_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    # what the service will load: a policy name or parameter cepr does not know fails here, with cepr's message
    from cepr.dispatch import create_policy

    new = load_deployment(job_path, dep.algorithm)
    create_policy(new.policy, **new.policy_hps)
    return job_path, dep.algorithm


def _words(env: dict, name: str) -> list[str]:
    return shlex.split(env.get(name) or "")


def edge_command(env: dict, extra: list[str] = ()) -> list[str]:
    """The ``cepr serve edge`` command line for this environment (writes the job copy when one is needed)."""
    job = _get(env, "CEPR_JOB") or "benchmarkingjob.yaml"
    algorithm = _get(env, "CEPR_ALGORITHM")
    over = edge_overrides(env)
    if over:
        job_path, algorithm = derive_job(job, algorithm, over, env,
                                         Path(_get(env, "CEPR_WORK_DIR") or "/tmp/cepr-deploy"))
        job = str(job_path)
    cmd = ["cepr", "serve", "edge", "-f", job, "--host", _get(env, "CEPR_HOST") or "0.0.0.0",
           "--port", _get(env, "CEPR_PORT") or "8080"]
    if algorithm:
        cmd += ["--algorithm", algorithm]
    for src in _words(env, "CEPR_SOURCES"):
        cmd += ["--source", src]
    for task in _words(env, "CEPR_TASKS"):
        cmd += ["--task", task]
    if (env.get("CEPR_LOOP") or "").lower() in TRUE:
        cmd.append("--loop")
    for var, flag in (("CEPR_FPS", "--fps"), ("CEPR_CLOUD", "--cloud"), ("CEPR_QUEUE_URL", "--queue-url"),
                      ("CEPR_CLOUD_WORKERS", "--cloud-workers"), ("CEPR_DEADLINE_S", "--deadline-s"),
                      ("CEPR_CLOUD_PENDING", "--cloud-pending"), ("CEPR_LOG_LEVEL", "--log-level")):
        if _get(env, var):
            cmd += [flag, env[var]]
    return cmd + list(extra)


def cloud_command(env: dict, extra: list[str] = ()) -> list[str]:
    """The ``cepr serve cloud`` command line: Sedna's BIG_MODEL_BIND_PORT is the port its Service targets."""
    port = _get(env, "CEPR_PORT") or _get(env, "BIG_MODEL_BIND_PORT") or "8000"
    cmd = ["cepr", "serve", "cloud", "--host", _get(env, "CEPR_HOST") or "0.0.0.0", "--port", port]
    model = _get(env, "CEPR_CLOUD_ONNX")
    if model is None:
        model = _model_file(env, "CEPR_CLOUD_ONNX")
    if model is not None and model != "job":
        cmd += ["--model", model]
    for var, flag in (("CEPR_THREADS", "--threads"), ("CEPR_SESSIONS", "--sessions"),
                      ("CEPR_PROVIDERS", "--providers"), ("CEPR_LOG_LEVEL", "--log-level")):
        if _get(env, var):
            cmd += [flag, env[var]]
    return cmd + list(extra)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("edge", "cloud"):
        print("usage: entrypoint.py edge|cloud [--print] [EXTRA CEPR ARGS...]  (docs/deploy.md)", file=sys.stderr)
        return 2
    role, rest = argv[0], argv[1:]
    show = "--print" in rest
    rest = [a for a in rest if a != "--print"]
    env = dict(os.environ)
    from cepr.errors import CeprError

    try:
        cmd = edge_command(env, rest) if role == "edge" else cloud_command(env, rest)
    except (EntrypointError, CeprError) as e:
        print(f"entrypoint: {e}", file=sys.stderr)
        return 2
    if show:
        print(json.dumps(cmd))
        return 0
    print("entrypoint: " + shlex.join(cmd), file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
