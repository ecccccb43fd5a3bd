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


def test_flat_keys_become_one_nested_model():
    """The YAML's flat keys (which Ianvs passes and names rank columns after) group into what they configure:
    the backend and the server as discriminated unions, each server owning its own keys."""
    from cepr.cloud.settings import FLAT_KEYS, SERVER_KEYS, CloudSettings, LlamaCppServer, ReferenceServer

    s = CloudSettings.from_flat({**OPENAI, "payload": "image", "quality": 70, "link": "wifi", "link_seed": 3,
                                 "emulate_link": False, "fusion": "confidence_weighted"})
    assert s.backend.name == "openai" and s.backend.options == {"base_url": OPENAI["base_url"], "model": "m"}
    assert not s.backend.auto
    assert isinstance(s.server, ReferenceServer) and s.expert.model == "cloud"
    assert (s.payload.mode, s.payload.quality) == ("image", 70)
    assert (s.link.preset, s.link.seed, s.link.emulate) == ("wifi", 3, False)
    assert s.fusion == "confidence"  # the canonical name of the rule
    auto = CloudSettings.from_flat({"server": "llamacpp", "server_ctx": 2048, "server_mmproj": "none",
                                    "server_threads": 2, "expert_model": "cloud"})
    assert auto.backend.auto and isinstance(auto.server, LlamaCppServer)
    assert (auto.server.ctx, auto.server.mmproj, auto.threads) == (2048, None, 2)
    # every flat key belongs to exactly one place; the servers' keys are theirs alone
    owned = [k for keys in SERVER_KEYS.values() for k in keys]
    assert set(owned) <= FLAT_KEYS and "server_model" in SERVER_KEYS["llamacpp"] and "server_dtype" in SERVER_KEYS["vllm"]
    assert SERVER_KEYS["reference"] == ()


@pytest.mark.parametrize("hps, message", [
    ({"server": "llamacpp", "server_ctx": 0}, "n_ctx must be positive"),
    ({"server": "llamacpp", "server_draft_tokens": "many"}, "server: llamacpp: server_draft_tokens"),
    ({"server_threads": 0}, "server_threads"),
    ({"server": "llamacpp", "server_dtype": "bfloat16"}, "server_dtype only apply to server: vllm"),
    ({"link_seed": "x"}, "bad link"),
    ({"emulate_link": "maybe"}, "emulate_link"),
])
def test_a_bad_nested_setting_names_its_flat_key(hps, message):
    with pytest.raises(CeprError, match=message):
        CloudModule.check_hyperparameters(**hps)


def test_every_shipped_algorithm_file_parses_into_the_settings_model(monkeypatch):
    """Users' files keep working: every cloud module setting of every test case in the repository's jobs builds
    the typed model (nothing is started)."""
    import itertools
    from pathlib import Path

    from cepr.cloud.settings import CloudSettings
    from cepr.runner.config import JobDoc, load_doc, parse_algorithm, resolve_path

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    seen = set()
    jobs = sorted(root.glob("benchmarkingjob*.yaml"))
    assert jobs
    for job in jobs:
        # only the algorithm files: a job's testenv may name data this checkout does not have (the real layout)
        refs = load_doc(job, JobDoc, "benchmarking job file").benchmarkingjob.test_object.algorithms
        for ref in refs:
            alg = parse_algorithm(ref.name, resolve_path(ref.url, job, "algorithm url"))
            grid = alg.module("cloudmodel")
            names = [hp for hp, _ in grid.grid]
            for values in itertools.product(*(v for _, v in grid.grid)):
                point = {**grid.base, **dict(zip(names, values))}
                if repr(sorted(point.items(), key=str)) not in seen:
                    seen.add(repr(sorted(point.items(), key=str)))
                    CloudSettings.from_flat(point)
    assert len(seen) >= 10  # distinct settings (52 test cases share 12 today)
