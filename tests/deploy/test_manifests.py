"""deploy/: the Kubernetes manifests, the Sedna resources, the Dockerfile and the entrypoint, checked offline.

- Plain Kubernetes manifests (deploy/k8s/*.yaml): kubernetes-validate in strict mode (unknown fields are errors)
  against the Kubernetes versions in K8S_VERSIONS, plus the references between them (selectors, named ports,
  probes, the HPA's target, the ConfigMap a pod mounts).
- Sedna resources (deploy/sedna/*.yaml): their fields against the fields Sedna's CRDs define (SEDNA_SCHEMAS below,
  written from kubeedge/sedna build/crds/sedna.io_jointinferenceservices.yaml and sedna.io_models.yaml at commit
  2c30e569eedadf6a89c22f3ec6d6310a61c3b66b, v0.7.0-4, whose CRD files last changed in 27cc953a of 2025-02-14);
  their pod templates as Kubernetes Pods and their hpa as a HorizontalPodAutoscaler, with kubernetes-validate.
- Every `cepr ...` command: the ones written in the files' comments and the ones deploy/entrypoint.py builds for each
  container (with the environment Sedna injects, for the Sedna workers) go through the real CLI's parser, and the
  edge command's job loads with cepr's own job loader, in a folder holding only what the Dockerfile copies.
- Every path the Dockerfile copies exists and is let through by its .dockerignore.
Nothing here needs a cluster, a container runtime or the network.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cepr.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# 1.30: the Kubernetes that KubeEdge's recent releases build on (kubeedge/kubeedge#5997); 1.37: the newest bundled
K8S_VERSIONS = ("1.30.0", "1.37.0")
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
SEDNA_FILES = sorted((DEPLOY / "sedna").glob("*.yaml"))
DOCKERFILE = DEPLOY / "Dockerfile"
OUR_IMAGES = ("cepr-edge:", "cepr-cloud:")



def _load_entrypoint():
    """deploy/entrypoint.py (what the images run), imported by path under a name of its own."""
    spec = importlib.util.spec_from_file_location("cepr_deploy_entrypoint", DEPLOY / "entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


entrypoint = _load_entrypoint()


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all(files) -> list[tuple[Path, dict]]:
    return [(f, d) for f in files for d in _docs(f)]


# ---- Sedna's CRD fields (sedna.io/v1alpha1), as the CRD files define them --------------------------------------
# A schema is {field: (required, sub)}; sub is str / "string" (a string), "object" (not checked further: metadata),
# "podtemplate" (validated as a Kubernetes Pod), "hpa" (validated as a HorizontalPodAutoscaler spec), a dict (the
# next level), or a one-item list [sub] (an array of sub).
_WORKER_COMMON = {
    "model": (True, {"name": (True, "string")}),
    "template": (True, "podtemplate"),
    "hpa": (False, "hpa"),  # minReplicas, maxReplicas (required), metrics, behavior
}
SEDNA_SCHEMAS = {
    "JointInferenceService": {
        "apiVersion": (True, "string"), "kind": (True, "string"), "metadata": (True, "object"),
        "spec": (True, {
            "edgeWorker": (True, {**_WORKER_COMMON, "hardExampleMining": (True, {
                "name": (True, "string"),
                "parameters": (False, [{"key": (True, "string"), "value": (True, "string")}]),
            })}),
            "cloudWorker": (True, dict(_WORKER_COMMON)),
        }),
    },
    "Model": {
        "apiVersion": (True, "string"), "kind": (True, "string"), "metadata": (True, "object"),
        "spec": (True, {
            "url": (True, "string"), "format": (True, "string"), "credentialName": (False, "string"),
            "device_soc_versions": (False, ["string"]),
        }),
    },
}
HPA_FIELDS = {"minReplicas", "maxReplicas", "metrics", "behavior"}


def _as_pod(template: dict, name: str) -> dict:
    meta = {**(template.get("metadata") or {}), "name": name}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec")}


def _as_hpa(hpa: dict, name: str) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, **hpa}}


def sedna_errors(value, schema, path: str = "") -> list[str]:
    """What in ``value`` the Sedna CRD does not allow: unknown or missing fields, wrong types, and (through
    kubernetes-validate) bad pod templates and HPA specs."""
    errs = []
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path or '.'}: expected a mapping, got {type(value).__name__}"]
        for k in value:
            if k not in schema:
                errs.append(f"{path}.{k}: not a field of Sedna's CRD here (known: {', '.join(sorted(schema))})")
        for k, (required, sub) in schema.items():
            if k in value:
                errs += sedna_errors(value[k], sub, f"{path}.{k}")
            elif required:
                errs.append(f"{path}.{k}: required by Sedna's CRD, missing")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        for i, item in enumerate(value):
            errs += sedna_errors(item, schema[0], f"{path}[{i}]")
    elif schema == "string":
        if not isinstance(value, str):
            errs.append(f"{path}: Sedna's CRD wants a string, got {type(value).__name__} {value!r}")
    elif schema == "object":
        if not isinstance(value, dict):
            errs.append(f"{path}: expected a mapping")
    elif schema == "podtemplate":
        if set(value) - {"metadata", "spec"}:
            errs.append(f"{path}: a pod template has only metadata and spec, got {sorted(value)}")
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(_as_pod(value, "template"), v, strict=True)
            except kubernetes_validate.ValidationError as e:
                errs.append(f"{path}.spec (as a Pod, Kubernetes {v}): {'.'.join(map(str, e.path))}: {e.message}")
    elif schema == "hpa":
        if "maxReplicas" not in value:
            errs.append(f"{path}.maxReplicas: required by Sedna's CRD, missing")
        errs += [f"{path}.{k}: not a field of Sedna's HPA" for k in set(value) - HPA_FIELDS]
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(_as_hpa(value, "hpa"), v, strict=True)
            except kubernetes_validate.ValidationError as e:
                errs.append(f"{path} (as an HPA, Kubernetes {v}): {'.'.join(map(str, e.path))}: {e.message}")
    return errs


def _sedna_resource_errors(doc: dict) -> list[str]:
    if doc.get("apiVersion") != "sedna.io/v1alpha1" or doc.get("kind") not in SEDNA_SCHEMAS:
        return [f"not a Sedna resource this test knows: {doc.get('apiVersion')}/{doc.get('kind')}"]
    return sedna_errors(doc, SEDNA_SCHEMAS[doc["kind"]])


# ---- the files ------------------------------------------------------------------------------------------------

def test_every_deploy_yaml_has_a_validator():
    """A new manifest must land in deploy/k8s (Kubernetes schemas) or deploy/sedna (Sedna's CRD fields);
    deploy/nginx holds nginx configuration, not manifests."""
    found = {p for p in DEPLOY.rglob("*.y*ml") if "nginx" not in p.relative_to(DEPLOY).parts}
    assert found == set(K8S_FILES) | set(SEDNA_FILES)
    assert K8S_FILES and SEDNA_FILES
    kinds = {d["kind"] for _, d in _all(K8S_FILES)}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler"} <= kinds
    assert {d["kind"] for _, d in _all(SEDNA_FILES)} == {"JointInferenceService", "Model"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_strict(version):
    for f, doc in _all(K8S_FILES):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{f.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): "
                        f"{'.'.join(map(str, e.path))}: {e.message}")


def _containers(pod_spec: dict) -> list[dict]:
    return list(pod_spec.get("containers") or [])


def test_kubernetes_manifests_fit_together():
    docs = _all(K8S_FILES)
    deployments = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Deployment"}
    configmaps = {d["metadata"]["name"] for _, d in docs if d["kind"] == "ConfigMap"}
    for name, d in deployments.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        spec = d["spec"]["template"]["spec"]
        for c in _containers(spec):
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            if ports:  # a server: told ready and alive by probes; HTTP ones on /health at a declared port
                assert {"readinessProbe", "livenessProbe"} <= set(c), (name, c["name"])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in c and "httpGet" in c[probe]:
                    get = c[probe]["httpGet"]
                    assert get["path"] == "/health" and get["port"] in ports, (name, probe)
                if probe in c and "tcpSocket" in c[probe]:
                    assert c[probe]["tcpSocket"]["port"] in ports, (name, probe)
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), name
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, (name, v)
    for _, s in docs:
        if s["kind"] == "Service":
            targets = [d for d in deployments.values()
                       if s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
            assert len(targets) == 1, f"Service {s['metadata']['name']} selects {len(targets)} Deployments"
            names = {p.get("name") for c in _containers(targets[0]["spec"]["template"]["spec"])
                     for p in c.get("ports", [])}
            assert all(p["targetPort"] in names for p in s["spec"]["ports"]), s["metadata"]["name"]
        if s["kind"] == "HorizontalPodAutoscaler":
            assert s["spec"]["scaleTargetRef"]["name"] in deployments
    gpu = [c for d in deployments.values() for c in _containers(d["spec"]["template"]["spec"])
           if "nvidia.com/gpu" in c["resources"]["limits"]]
    assert gpu and gpu[0]["command"][:2] == ["vllm", "serve"]


def test_sedna_resources_match_the_crd_fields():
    docs = _all(SEDNA_FILES)
    for f, doc in docs:
        assert _sedna_resource_errors(doc) == [], f"{f.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}"
    models = {d["metadata"]["name"] for _, d in docs if d["kind"] == "Model"}
    configmaps = {d["metadata"]["name"] for _, d in _all(K8S_FILES) if d["kind"] == "ConfigMap"}
    from cepr.dispatch import POLICY_REGISTRY

    for _, ji in docs:
        if ji["kind"] != "JointInferenceService":
            continue
        for worker in ("edgeWorker", "cloudWorker"):
            w = ji["spec"][worker]
            assert w["model"]["name"] in models, f"{worker} names a Model that deploy/sedna does not define"
            for v in w["template"]["spec"].get("volumes", []):
                if "configMap" in v:
                    assert v["configMap"]["name"] in configmaps
        hem = ji["spec"]["edgeWorker"]["hardExampleMining"]
        assert POLICY_REGISTRY.canonical(hem["name"]) == hem["name"]  # a cepr policy, by its own name
        assert not POLICY_REGISTRY.capabilities(hem["name"]).get("needs_labels")  # deployable
        # Sedna's cloud Service targets port 5000 (BIG_MODEL_BIND_PORT): the cloud container must listen there
        cloud_ports = [p["containerPort"] for c in _containers(ji["spec"]["cloudWorker"]["template"]["spec"])
                       for p in c.get("ports", [])]
        assert cloud_ports == [5000]


def test_validators_reject_misspelled_and_mistyped_fields():
    """The negative side: each validator above refuses a broken copy of a shipped resource."""
    dep = next(d for _, d in _all(K8S_FILES) if d["kind"] == "Deployment")
    bad = copy.deepcopy(dep)
    c = bad["spec"]["template"]["spec"]["containers"][0]
    c["imagePullPolcy"] = c.pop("imagePullPolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)
    bad = copy.deepcopy(dep)
    bad["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError, match="'one' is not of type 'integer'"):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)

    ji = next(d for _, d in _all(SEDNA_FILES) if d["kind"] == "JointInferenceService")
    bad = copy.deepcopy(ji)
    bad["spec"]["edgeWorker"]["hardExampleMinning"] = bad["spec"]["edgeWorker"].pop("hardExampleMining")
    errs = _sedna_resource_errors(bad)
    assert any("hardExampleMinning: not a field" in e for e in errs)
    assert any("hardExampleMining: required" in e for e in errs)
    bad = copy.deepcopy(ji)
    bad["spec"]["edgeWorker"]["hardExampleMining"]["parameters"][0]["value"] = 0.6  # the CRD says string
    assert any("wants a string" in e for e in _sedna_resource_errors(bad))
    bad = copy.deepcopy(ji)
    bad["spec"]["cloudWorker"]["template"]["spec"]["containers"][0]["port"] = 5000  # a Pod has no such field
    assert any("as a Pod" in e and "port" in e for e in _sedna_resource_errors(bad))
    bad = copy.deepcopy(ji)
    del bad["spec"]["cloudWorker"]["hpa"]["maxReplicas"]
    assert any("maxReplicas: required" in e for e in _sedna_resource_errors(bad))
    model = next(d for _, d in _all(SEDNA_FILES) if d["kind"] == "Model")
    bad = copy.deepcopy(model)
    bad["spec"]["uri"] = bad["spec"].pop("url")
    assert {"spec.uri", "spec.url"} <= {e.split(":")[0].lstrip(".") for e in _sedna_resource_errors(bad)}

    with pytest.raises(AssertionError, match="--sesions"):
        _parse(["cepr", "serve", "cloud", "--sesions", "2"], "a misspelled flag")
    with pytest.raises(AssertionError, match="--session"):  # argparse alone would take it for --sessions
        _parse(["cepr", "serve", "cloud", "--session", "2"], "an abbreviated flag")


# ---- cepr command lines -----------------------------------------------------------------------------------------

def _strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """No abbreviated flags anywhere in the tree: a flag renamed from --x to --x-y must break `--x`."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _strict(sub)
    return parser


def _parse(argv: list[str], where: str):
    assert argv[0] == "cepr", where
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = _strict(build_parser()).parse_args(argv[1:])
    except SystemExit:
        raise AssertionError(f"{where}: `{' '.join(argv)}` does not parse: {err.getvalue().strip()}") from None
    assert getattr(args, "func", None) is not None, f"{where}: `{' '.join(argv)}` names no command"
    return args


def _written_commands() -> list[tuple[str, list[str]]]:
    """`cepr ...` spans in backticks (comments may wrap them over lines) and container commands that run cepr."""
    out = []
    for f in [*K8S_FILES, *SEDNA_FILES, DOCKERFILE, DEPLOY / "entrypoint.py"]:
        text = re.sub(r"\n\s*#\s*", " ", f.read_text())  # join wrapped comment lines
        for m in re.finditer(r"`(cepr [^`]+)`", text):
            out.append((f"{f.relative_to(ROOT)}: comment", m.group(1).split()))
    for f, doc in _all(K8S_FILES):
        if doc["kind"] == "Deployment":
            for c in _containers(doc["spec"]["template"]["spec"]):
                cmd = [*c.get("command", []), *c.get("args", [])]
                if cmd[:1] == ["cepr"]:
                    out.append((f"{f.relative_to(ROOT)}: {c['name']}", cmd))
    return out


def test_written_cepr_commands_parse():
    found = _written_commands()
    assert len(found) >= 5  # the commands the manifests' comments say their containers run, and the workers'
    for where, argv in found:
        _parse(argv, where)
    runs = [(w, a) for w, a in found if not w.endswith(": comment")]
    assert [a[:3] for _, a in runs] == [["cepr", "stream", "worker"]]
    for where, argv in runs:  # what a manifest's comment says a container runs is what it runs
        said = [a for w, a in found if w == where.split(": ")[0] + ": comment" and a[:3] == argv[:3]]
        assert said and all(vars(_parse(a, where)) == vars(_parse(argv, where)) for a in said), where


@pytest.fixture
def image_dir(tmp_path, monkeypatch):
    """The image's /app: what the Dockerfile copies (as links) plus the edge ConfigMap at ./config, as the
    Deployment mounts it; the current directory, as WORKDIR is in the container."""
    app = tmp_path / "app"
    app.mkdir()
    for src, dest in _dockerfile_copies():
        target = app / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(ROOT / src)
    cm = next(d for _, d in _all(K8S_FILES) if d["kind"] == "ConfigMap")
    (app / "config").mkdir()
    for key, text in cm["data"].items():
        (app / "config" / key).write_text(text)
    monkeypatch.chdir(app)
    return app


def _container_env(c: dict) -> dict:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def _our_containers():
    """(where, role, container, Sedna's injected env or None) for every container that runs our images."""
    for f, doc in _all(K8S_FILES + SEDNA_FILES):
        if doc["kind"] == "Deployment":
            pods = [(None, doc["spec"]["template"]["spec"])]
        elif doc["kind"] == "JointInferenceService":
            pods = [(w, doc["spec"][w]["template"]["spec"]) for w in ("edgeWorker", "cloudWorker")]
        else:
            continue
        for worker, spec in pods:
            for c in _containers(spec):
                if c["image"].startswith(OUR_IMAGES) and "command" not in c:  # those run cepr directly
                    role = "edge" if c["image"].startswith("cepr-edge:") else "cloud"
                    yield f"{f.relative_to(ROOT)}: {c['name']}", role, c, (doc, worker) if worker else None


def _sedna_env(doc: dict, worker: str, model_file: Path) -> dict:
    """What Sedna v0.7.0's controller injects (jointinferenceservice.go, createOrUpdateWorker)."""
    common = {"MODEL_URL": str(model_file), "NAMESPACE": "cepr", "SERVICE_NAME": doc["metadata"]["name"],
              "WORKER_NAME": f"{worker[:-6].lower()}worker-abcde"}
    if worker == "cloudWorker":
        return {**common, "BIG_MODEL_BIND_PORT": "5000"}
    hem = doc["spec"]["edgeWorker"]["hardExampleMining"]
    return {**common, "BIG_MODEL_IP": f"{doc['metadata']['name']}-cloud.cepr", "BIG_MODEL_PORT": "5000",
            "HEM_NAME": hem["name"], "HEM_PARAMETERS": json.dumps(hem.get("parameters", [])),
            "LC_SERVER": "http://localhost:9100"}


def test_entrypoint_commands_parse_and_the_job_loads(image_dir, tmp_path):
    """What each container of our images runs: the entrypoint's command from the container's env (and Sedna's),
    parsed by the real CLI; for the edge, the job it names loads with cepr's loader from the image's files, with
    the cloud address, policy and model that the environment says."""
    from cepr.serve.edge_service import load_deployment

    model_file = tmp_path / "home-data" / "model.onnx"
    model_file.parent.mkdir()
    model_file.write_bytes(b"stand-in: the entrypoint only checks that Sedna's MODEL_URL file is there")
    seen, compared = set(), 0
    for where, role, c, sedna in _our_containers():
        env = _container_env(c)
        if sedna:
            env.update(_sedna_env(*sedna, model_file))
        env["CEPR_WORK_DIR"] = str(tmp_path / f"work-{len(seen)}")
        build = entrypoint.edge_command if role == "edge" else entrypoint.cloud_command
        argv = build(env)
        args = _parse(argv, where)
        said = [a for w, a in _written_commands() if w == where.split(": ")[0] + ": comment" and a[2] == role]
        for a in said:  # what the manifest's comment says the container runs is what it runs
            assert vars(_parse(a, where)) == vars(args), f"{where}: the comment's `{' '.join(a)}` is not what runs"
        compared += len(said)
        port = [p["containerPort"] for p in c["ports"]]
        assert [args.port] == port, f"{where}: listens on {args.port}, the container declares {port}"
        assert args.host == "0.0.0.0"
        seen.add((role, bool(sedna)))
        if role == "cloud":
            assert args.model == (str(model_file) if sedna else "cloud")
            continue
        dep = load_deployment(args.job, args.algorithm)
        if sedna:
            doc = sedna[0]
            hem = doc["spec"]["edgeWorker"]["hardExampleMining"]
            assert dep.policy == hem["name"]
            assert dep.policy_hps == {p["key"]: yaml.safe_load(p["value"]) for p in hem["parameters"]}
            assert dep.cloud_hps["base_url"] == f"http://{doc['metadata']['name']}-cloud.cepr:5000/v1"
            assert dep.edge_hps["model"] == str(model_file)
        else:
            assert dep.cloud_hps["base_url"] == "http://cepr-cloud:8000/v1"  # the Service of cloud-expert.yaml
            assert dep.policy == "Threshold"
        assert dep.cloud_hps["link"] == "none" and dep.cloud_hps["model"] == entrypoint.REFERENCE_EXPERT_MODEL
    assert seen == {("edge", False), ("edge", True), ("cloud", False), ("cloud", True)}
    assert compared == 2  # deploy/k8s/edge.yaml and cloud-expert.yaml say what their containers run
    # the queue path that deploy/k8s/edge.yaml's comment describes, against deploy/k8s/cloud-queue.yaml's Redis
    edge = next(c for w, role, c, sedna in _our_containers() if role == "edge" and not sedna)
    queue = {"CEPR_CLOUD": "queue", "CEPR_QUEUE_URL": "redis://cepr-redis:6379/0", "CEPR_CLOUD_WORKERS": "0"}
    text = re.sub(r"\n\s*#\s*", " ", (DEPLOY / "k8s" / "edge.yaml").read_text())
    assert all(f"{k}={v}" in text for k, v in queue.items())
    args = _parse(entrypoint.edge_command({**_container_env(edge), **queue}), "edge, queue path")
    assert (args.cloud, args.cloud_workers) == ("queue", 0)
    redis = {d["metadata"]["name"]: d for _, d in _all(K8S_FILES) if d["kind"] == "Service"}["cepr-redis"]
    assert args.queue_url == f"redis://cepr-redis:{redis['spec']['ports'][0]['port']}/0"
    worker = next(a for w, a in _written_commands() if a[:3] == ["cepr", "stream", "worker"] and "comment" not in w)
    w = _parse(worker, "worker")
    assert w.redis == args.queue_url
    # the workers' backend: the cloud module that cepr stream worker builds from the same job (nothing connects)
    from cepr.stream.backend import cloud_module_from_yaml

    module = cloud_module_from_yaml(w.file, w.algorithm, overrides={"link": "none"} if w.no_link else None)
    try:
        assert module.client.link is None
        assert (module.client.backend.cfg.base_url, module.client.backend.cfg.model) == (
            "http://cepr-cloud:8000/v1", entrypoint.REFERENCE_EXPERT_MODEL)
    finally:
        module.cleanup()


def test_entrypoint_refuses_what_it_cannot_run(image_dir, tmp_path, capsys, monkeypatch):
    base = {"CEPR_JOB": "./config/job.yaml", "CEPR_WORK_DIR": str(tmp_path / "w")}
    with pytest.raises(entrypoint.EntrypointError, match="MODEL_URL='/nowhere/m.onnx'.*CEPR_EDGE_MODEL=job"):
        entrypoint.edge_command({**base, "MODEL_URL": "/nowhere/m.onnx"})
    with pytest.raises(entrypoint.EntrypointError, match="HEM_PARAMETERS"):
        entrypoint.edge_command({**base, "HEM_NAME": "Threshold", "HEM_PARAMETERS": "threshold=0.6"})
    # another policy gets only its own parameters; CEPR_EDGE_MODEL=job keeps the job's model despite MODEL_URL
    argv = entrypoint.edge_command({**base, "HEM_NAME": "CrossEntropy", "CEPR_EDGE_MODEL": "job",
                                    "MODEL_URL": "/nowhere/m.onnx", "CEPR_CLOUD_URL": "http://c:1/v1"})
    from cepr.serve.edge_service import load_deployment

    dep = load_deployment(argv[argv.index("-f") + 1], argv[argv.index("--algorithm") + 1])
    assert (dep.policy, dep.policy_hps, dep.edge_hps["model"]) == ("CrossEntropy", {}, "edge-rgb-int8")
    # a policy or parameter cepr does not know stops the container at once, with cepr's own message
    from cepr.errors import CeprError

    with pytest.raises(CeprError, match="Threshhold.*did you mean 'Threshold'"):
        entrypoint.edge_command({**base, "HEM_NAME": "Threshhold"})
    with pytest.raises(CeprError, match="threshhold"):
        entrypoint.edge_command({**base, "HEM_PARAMETERS": '[{"key": "threshhold", "value": "0.5"}]'})
    # main(): --print shows the command and runs nothing; a refusal is one line on stderr and exit status 2
    monkeypatch.setenv("BIG_MODEL_BIND_PORT", "5000")
    assert entrypoint.main(["cloud", "--print"]) == 0
    assert json.loads(capsys.readouterr().out) == ["cepr", "serve", "cloud", "--host", "0.0.0.0", "--port", "5000"]
    monkeypatch.setenv("MODEL_URL", "/nowhere/m.onnx")
    assert entrypoint.main(["cloud", "--print"]) == 2
    assert "CEPR_CLOUD_ONNX=job" in capsys.readouterr().err


# ---- the Dockerfile -------------------------------------------------------------------------------------------

def _dockerfile_copies() -> list[tuple[str, str]]:
    """(source, destination) of every COPY from the build context; destinations are relative to WORKDIR /app."""
    out = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            *srcs, dest = [w for w in words[1:] if not w.startswith("--")]
            out += [(s.rstrip("/"), s.rstrip("/") if dest in ("./", ".") else dest.rstrip("/")) for s in srcs]
    return out


def test_dockerfile_copies_exist_and_pass_its_dockerignore():
    copies = _dockerfile_copies()
    assert {s for s, _ in copies} >= {"pyproject.toml", "cloud-edge-perception-reasoning", "benchmarkingjob.yaml",
                                      "testalgorithms", "testenv", "deploy/entrypoint.py"}
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    assert "*" in ignore  # everything else stays out of the build context
    for src, dest in copies:
        assert dest == src, f"COPY {src} {dest}: the image keeps the repository's layout (the test stages it so)"
        assert (ROOT / src).exists(), f"deploy/Dockerfile copies {src}, which is not in the repository"
        assert src in allowed, f"deploy/Dockerfile.dockerignore keeps {src} out of the build context"
    text = DOCKERFILE.read_text()
    targets = re.findall(r"^FROM \S+ AS (\w+)", text, re.MULTILINE)
    assert {"edge", "cloud"} <= set(targets)
    for role in ("edge", "cloud"):
        assert f'ENTRYPOINT ["python3", "/app/deploy/entrypoint.py", "{role}"]' in text
    extras = re.findall(r'pip install "\.\[(\w+)\]"', text)
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras and all(e in declared for e in extras)
