"""RiskAware: hazards near the path go to the cloud; confident low-risk frames stay; bad input names the field."""

import pytest
from routing_inputs import edge

from cepr.dispatch import RiskAware, create_policy
from cepr.edge.features import HAZARD_CLASSES
from cepr.errors import CeprError


def test_confident_low_risk_frame_stays():
    assert RiskAware()(edge(confidence=0.95, risk=0.1)) is False


@pytest.mark.parametrize("cls", HAZARD_CLASSES)
def test_every_hazard_class_near_the_path_goes_to_the_cloud_however_confident(cls):
    p = RiskAware(hazard_distance_m=6.0)
    assert p(edge(confidence=0.99, hazards={cls: 5.9}, hazard_m=5.9)) is True
    assert p(edge(confidence=0.99, hazards={cls: 6.1}, hazard_m=6.1)) is False


def test_risk_and_confidence_thresholds_each_send():
    p = RiskAware(risk_threshold=0.5, confidence_threshold=0.6)
    assert p(edge(confidence=0.99, risk=0.5)) is True
    assert p(edge(confidence=0.99, risk=0.49)) is False
    assert p(edge(confidence=0.59, risk=0.0)) is True


def test_hazard_classes_restricts_what_counts():
    p = RiskAware(hazard_classes=["person", "rider"])
    assert p(edge(confidence=0.99, hazards={"car": 1.0}, hazard_m=1.0)) is False
    assert p(edge(confidence=0.99, hazards={"car": 1.0, "person": 2.0}, hazard_m=1.0)) is True
    assert RiskAware(hazard_classes="person,car").hazard_classes == ("person", "car")


def test_yaml_strings_are_read():
    p = create_policy("RiskAware", hazard_distance_m="3", risk_threshold="0.9", confidence_threshold="0")
    assert p(edge(confidence=0.1, risk=0.5, hazards={"bus": 3.5})) is False
    assert p(edge(confidence=0.1, risk=0.5, hazards={"bus": 2.5})) is True


def test_bad_parameters_are_named():
    with pytest.raises(CeprError, match="hazard_classes: 'persn'.*did you mean 'person'"):
        RiskAware(hazard_classes=["persn"])
    with pytest.raises(CeprError, match="risk_threshold must be in"):
        RiskAware(risk_threshold=5)
    with pytest.raises(CeprError, match="hazard_distance_m"):
        RiskAware(hazard_distance_m=-1)
    with pytest.raises(CeprError, match="did you mean 'risk_threshold'"):
        RiskAware(risk_treshold=0.5)


def test_bad_input_names_the_field():
    p = RiskAware()
    e = edge()
    del e["features"]
    with pytest.raises(CeprError, match="'features'"):
        p(e)
    with pytest.raises(CeprError, match=r"features\.hazards"):
        p(edge(hazards=[1.0]))
    with pytest.raises(CeprError, match=r"features\.risk"):
        p(edge(risk="high"))
    e = edge(risk=0.0)
    del e["confidence"]
    with pytest.raises(CeprError, match="confidence"):
        p(e)
    with pytest.raises(CeprError, match="inference-then-mining"):
        p({"rgb": "x.png"}.keys())
