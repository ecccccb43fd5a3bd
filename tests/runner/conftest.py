"""Tiny Ianvs-style jobs for the runner's contract tests: module files, an index and the three YAML files."""

from pathlib import Path

import pytest
import yaml

TINY_MODULES = '''
import os
from cepr.compat import get_class_factory

ClassFactory, ClassType = get_class_factory()  # Sedna's under Ianvs (tests/runner/ianvs/README.md), else cepr's

CALLS = []


@ClassFactory.register(ClassType.GENERAL, alias="TinyProcessor")
class TinyProcessor:
    def __init__(self, tag="p"):
        self.tag = tag

    def __call__(self, dataset):
        dataset.x = [{"key": str(x), "rgb": str(x), "label": str(y), "task": "t", "index": i}
                     for i, (x, y) in enumerate(zip(dataset.x, dataset.y))]
        return dataset


@ClassFactory.register(ClassType.GENERAL, alias="TinyEdge")
class TinyEdge:
    def __init__(self, quality=1.0, crash_at=-1):
        self.quality = float(quality)
        self.crash_at = int(crash_at)
        os.environ["model_path"] = __file__

    def load(self, model_url=None, **kw):
        CALLS.append(("load", model_url))

    def predict(self, data=None, **kw):
        CALLS.append(("edge", data["index"], kw.get("mining_mode")))
        if data["index"] == self.crash_at:
            raise RuntimeError("edge exploded on purpose")
        conf = self.quality if data["index"] % 2 == 0 else self.quality / 4
        return {"source": "edge", "answer": "e", "confidence": conf, "index": data["index"]}


@ClassFactory.register(ClassType.GENERAL, alias="TinyCloud")
class TinyCloud:
    def __init__(self, **kw):
        self.kw = kw

    def inference(self, data, post_process=None, **kw):
        CALLS.append(("cloud", data["index"], kw.get("mining_mode")))
        return {"source": "cloud", "answer": "c", "index": data["index"]}


@ClassFactory.register(ClassType.HEM, alias="TinyThreshold")
class TinyThreshold:
    def __init__(self, threshold=0.5, **kw):
        self.threshold = float(threshold)

    def __call__(self, x):
        CALLS.append(("hem", x.get("source", "sample"), x["index"]))
        if "confidence" in x:
            return x["confidence"] < self.threshold
        return x["index"] % 3 == 0


def tiny_cloud_share(y_true, y_pred):
    return sum(1 for r in y_pred if r[0]) / len(y_pred)


def tiny_order_ok(y_true, y_pred):
    return float(all(r[1]["index"] == i and str(y_true[i]).endswith(f"lab{i}.png") for i, r in enumerate(y_pred)))


ClassFactory.register(ClassType.GENERAL, alias="tiny_cloud_share")(tiny_cloud_share)
ClassFactory.register(ClassType.GENERAL, alias="tiny_order_ok")(tiny_order_ok)
'''


@pytest.fixture(scope="session")
def tiny_module_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tinymods")
    p = d / "tiny_ji_modules.py"
    p.write_text(TINY_MODULES)
    return p


@pytest.fixture
def tiny_job(tmp_path, tiny_module_file, monkeypatch):
    """Write a tiny job into tmp_path; returns a function (algorithm_yaml_text, mode, ...) -> job path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKEND_TYPE", "TORCH")
    n = 6
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test-index.txt").write_text("".join(f"img{i}.png lab{i}.png extra\n" for i in range(n)))
    mod = str(tiny_module_file)

    def make(hem_hps=None, mode="inference-then-mining", edge_hps=None, metrics=("tiny_cloud_share", "tiny_order_ok"),
             rank=None, hem_name="TinyThreshold"):
        def hps(d):
            return [{k: {"values": v}} for k, v in d.items()]

        algo = {"algorithm": {"paradigm_type": "jointinference", "modules": [
            {"type": "dataset_processor", "name": "TinyProcessor", "url": mod},
            {"type": "edgemodel", "name": "TinyEdge", "url": mod,
             "hyperparameters": hps(edge_hps or {"quality": [1.0]})},
            {"type": "cloudmodel", "name": "TinyCloud", "url": mod},
            {"type": "hard_example_mining", "name": hem_name, "url": mod,
             "hyperparameters": hps(hem_hps if hem_hps is not None else {"threshold": [0.5, 0.9]})},
        ]}}
        (tmp_path / "algo.yaml").write_text(yaml.safe_dump(algo, sort_keys=False))
        testenv = {"testenv": {"dataset": {"train_index": "./data/test-index.txt",
                                           "test_index": "./data/test-index.txt"},
                               "hard_example_mining_mode": mode,
                               "metrics": [{"name": m, "url": mod} for m in metrics]}}
        (tmp_path / "testenv.yaml").write_text(yaml.safe_dump(testenv, sort_keys=False))
        job = {"benchmarkingjob": {
            "name": "tiny", "workspace": "./ws", "testenv": "./testenv.yaml",
            "test_object": {"type": "algorithms", "algorithms": [{"name": "tinyalgo", "url": "./algo.yaml"}]},
            "rank": rank or {"sort_by": [{"tiny_cloud_share": "descend"}],
                             "visualization": {"mode": "selected_only", "method": "print_table"},
                             "selected_dataitem": {"paradigms": ["all"], "modules": ["all"],
                                                   "hyperparameters": ["all"], "metrics": ["all"]},
                             "save_mode": "selected_and_all"}}}
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
        return tmp_path / "job.yaml"

    return make
