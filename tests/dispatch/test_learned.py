"""Learned: training (numpy logistic regression), saving and loading by path or shipped name, its decisions, and
that it beats a constant predictor, held out by frame, on the edge results of a real (tiny) run."""

import json

import numpy as np
import pytest
from routing_inputs import edge

from cepr.dispatch import Learned, create_policy, train_learned
from cepr.dispatch.learned import INPUTS, auc, log_loss, predict_wrong, shipped_models
from cepr.dispatch.training import collect_edge_results, cross_validate, read_records, write_jsonl
from cepr.errors import CeprError


def constructed(n=400, seed=0):
    """Edge results where the edge is wrong mostly when a hazard is near and the risk high."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        risk = float(rng.random())
        conf = float(rng.uniform(0.5, 1.0))
        wrong = rng.random() < (0.8 if risk > 0.6 else 0.1)
        e = edge(confidence=conf, key=f"f{i:04d}", task=["path_hazard", "action"][i % 2], answer="no", risk=risk)
        out.append({"edge": e, "truth": "yes" if wrong else "no"})
    return out


def test_learns_what_predicts_errors_and_thresholds_it(tmp_path):
    recs = constructed()
    model = train_learned(recs, source="constructed")
    assert model["inputs"] == list(INPUTS) and model["tasks"] == ["action", "path_hazard"]
    assert model["trained_on"]["n"] == 400
    assert model["train_fit"]["log_loss"] < model["train_fit"]["constant_log_loss"]
    risky, calm = edge(risk=0.9), edge(risk=0.1)
    assert predict_wrong(model, risky) > 0.6
    assert predict_wrong(model, calm) < 0.2
    path = tmp_path / "m.json"
    path.write_text(json.dumps(model))
    p = create_policy("Learned", model=str(path), threshold="0.5")
    assert p(risky) is True and p(calm) is False
    assert Learned(model=str(path), threshold=1.0)(risky) is False
    # saved with the run
    (tmp_path / "case").mkdir()
    info = p.save_artifacts(tmp_path / "case")
    assert info == {"router_model": "router-model.json", "router_model_source": str(path)}
    assert json.loads((tmp_path / "case" / "router-model.json").read_text()) == model


def test_shipped_model_loads_by_name():
    assert "learned-synth" in shipped_models()
    p = Learned()  # the default: learned-synth
    assert p.model["trained_on"]["n"] > 1000
    assert set(p.model["tasks"]) == {"path_hazard", "action", "people_count", "nearest_obstacle", "traversable"}
    assert 0.0 <= p.p_wrong(edge()) <= 1.0


def test_bad_models_and_inputs_are_named(tmp_path):
    with pytest.raises(CeprError, match="no shipped model 'learned-synt'.*did you mean 'learned-synth'"):
        Learned(model="learned-synt")
    with pytest.raises(CeprError, match="model file .*nope.json' not found"):
        Learned(model=str(tmp_path / "nope.json"))
    model = train_learned(constructed(60))
    for key, value, msg in (("format", "x", "not a cepr-learned-router model"), ("version", 9, "format version 9"),
                            ("inputs", ["confidence"], "retrain it"), ("weights", [1.0], "'weights' must be a list")):
        bad = tmp_path / f"{key}.json"
        bad.write_text(json.dumps({**model, key: value}))
        with pytest.raises(CeprError, match=msg):
            Learned(model=str(bad))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CeprError, match="cannot read the model"):
        Learned(model=str(tmp_path / "broken.json"))
    p = Learned(model=model)
    with pytest.raises(CeprError, match="task 'people_count' is not one the model was trained on"):
        p(edge(task="people_count"))
    e = edge()
    del e["features"]["free_m"]
    with pytest.raises(CeprError, match=r"features\.free_m, which is missing"):
        p(e)
    with pytest.raises(CeprError, match="'features'"):
        p({"confidence": 0.5, "task": "action"})
    with pytest.raises(CeprError, match="has no 'truth'"):
        train_learned([{"edge": edge()}, {"edge": edge()}])
    with pytest.raises(CeprError, match="need at least 2"):
        train_learned([])


def test_auc_and_log_loss():
    assert auc([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0
    assert auc([0.5, 0.5], [0, 1]) == 0.5
    assert auc([0.1, 0.2], [0, 0]) is None
    assert log_loss([0.5, 0.5], [0, 1]) == pytest.approx(np.log(2))


def test_beats_a_constant_predictor_on_a_real_runs_edge_results(tiny_data, tmp_path):
    """The shipped edge model on every task of every frame of the tiny synthetic set; 4-fold cross-validation
    with folds by frame (a frame's five questions never straddle training and testing)."""
    recs = []
    for split in ("train", "val", "test"):
        recs += collect_edge_results(tiny_data / "160x120" / f"{split}-index.txt", progress=False)
    assert len(recs) == 24 * 5
    assert all(r["edge"]["features"]["mask_classes"] >= 0 for r in recs)
    # the same records read back as a run's JSONL
    assert read_records([write_jsonl(recs, tmp_path / "edge.jsonl")]) == recs
    cv = cross_validate(recs, folds=4)
    assert 0 < cv["wrong_rate"] < 1
    assert cv["learned"]["log_loss"] < cv["constant"]["log_loss"]
    assert cv["learned"]["brier"] < cv["constant"]["brier"]
    assert cv["learned"]["auc"] > 0.6
