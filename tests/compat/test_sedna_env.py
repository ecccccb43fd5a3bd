"""What the adapters set up for Sedna: a backend that needs no torch, model_path, and the Oracle's marked name."""

import os
import runpy
import warnings
from pathlib import Path

import yaml

from cepr.compat import ORACLE_MARKED, SEDNA_BACKEND, prepare_sedna_env
from cepr.compat.class_factory import ClassType, lookup
from cepr.registry import import_module_file

REPO = Path(__file__).resolve().parents[2]
SEDNA_FRAMEWORK_BACKENDS = {"TENSORFLOW", "KERAS", "TORCH", "MINDSPORE"}  # each imports its framework


def test_default_backend_imports_no_framework(monkeypatch, tmp_path):
    monkeypatch.delenv("BACKEND_TYPE", raising=False)
    monkeypatch.delenv("model_path", raising=False)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    prepare_sedna_env(str(model))
    assert os.environ["BACKEND_TYPE"] == SEDNA_BACKEND == "ONNX"
    assert SEDNA_BACKEND not in SEDNA_FRAMEWORK_BACKENDS  # Sedna's framework-free BackendBase: no torch
    assert os.environ["model_path"] == str(model)
    with warnings.catch_warnings(record=True) as caught:  # Sedna's set_backend warns about any other value
        warnings.simplefilter("default")
        prepare_sedna_env()
        warnings.warn(f"{SEDNA_BACKEND} Not Support yet, use itself")
    assert not caught


def test_a_user_setting_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKEND_TYPE", "TORCH")
    existing = tmp_path / "keep.onnx"
    existing.write_bytes(b"x")
    monkeypatch.setenv("model_path", str(existing))
    prepare_sedna_env(str(tmp_path / "other.onnx"))
    assert os.environ["BACKEND_TYPE"] == "TORCH" and os.environ["model_path"] == str(existing)


def test_the_edge_adapter_sets_the_backend_at_import(monkeypatch):
    monkeypatch.delenv("BACKEND_TYPE", raising=False)
    runpy.run_path(str(REPO / "testalgorithms" / "perception-reasoning" / "cepr_edge_model.py"))  # a fresh import
    assert os.environ["BACKEND_TYPE"] == SEDNA_BACKEND


def test_the_oracle_is_registered_and_named_as_an_upper_bound():
    import_module_file(REPO / "testalgorithms" / "perception-reasoning" / "cepr_hard_example_mining.py")
    assert lookup(ClassType.HEM, ORACLE_MARKED) is lookup(ClassType.HEM, "Oracle")
    algo = yaml.safe_load((REPO / "testalgorithms" / "perception-reasoning" / "oracle.yaml").read_text())
    hem = [m for m in algo["algorithm"]["modules"] if m["type"] == "hard_example_mining"]
    assert [m["name"] for m in hem] == [ORACLE_MARKED]  # Ianvs prints module names: the table marks the bound
