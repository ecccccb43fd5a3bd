"""The cloud module's payload_policy and fusion hyperparameters are checked before any case runs (nothing started)."""

import pytest

from cepr.cloud.module import CloudModule
from cepr.errors import CeprError

OPENAI = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}


def test_good_settings_pass():
    CloudModule.check_hyperparameters(**OPENAI, payload_policy=["AdaptivePayload", {"name": "PrivacyAware",
                                                                                     "radius_m": 4}],
                                      fusion="safety_first")
    CloudModule.check_hyperparameters(**OPENAI, payload_policy="fixed", fusion="confidence_weighted")


@pytest.mark.parametrize("hps, message", [
    ({"payload_policy": "PrivacyAwre"}, "did you mean 'PrivacyAware'"),
    ({"fusion": "safety"}, "did you mean 'safety_first'"),
    ({"payload_policy": {"name": "AdaptivePayload", "rule": []}}, "did you mean 'rules'"),
    ({"payload_policy": 3}, "a policy name"),
    ({"fusoin": "cloud_wins"}, "did you mean 'fusion'"),
])
def test_bad_settings_name_the_problem(hps, message):
    with pytest.raises(CeprError, match=message):
        CloudModule.check_hyperparameters(**OPENAI, **hps)


def test_a_policy_that_can_drop_the_image_is_refused_for_the_vlm_message_style():
    CloudModule.check_hyperparameters(**OPENAI, message_style="vlm", payload="image")
    with pytest.raises(CeprError, match="payload_policy PrivacyAware"):
        CloudModule.check_hyperparameters(**OPENAI, message_style="vlm", payload="image",
                                          payload_policy="PrivacyAware")
