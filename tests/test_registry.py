"""cepr.registry: registration by decorator, lazy targets, entry-point plug-ins, capabilities, "did you mean";
and the four registries (policies, backends, reasoners, metrics) with their built-ins."""

import subprocess
import sys
import textwrap

import pytest

from cepr.errors import CeprError
from cepr.registry import Registry

CAPS = {"needs_labels": False, "needs_edge_result": False}


@pytest.fixture
def reg():
    return Registry("widgets", "widget", capabilities=CAPS)


def write_module(folder, name, text):
    (folder / f"{name}.py").write_text(textwrap.dedent(text))


def write_dist(folder, dist, entry_points: str):
    """A minimal installed distribution: what pip leaves in site-packages, reduced to what entry points need."""
    info = folder / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def unloaded():
    """The plug-in modules a test writes (named cepr_test_*) are forgotten afterwards."""
    yield
    for name in [n for n in sys.modules if n.startswith("cepr_test_")]:
        del sys.modules[name]


# ---- registration ------------------------------------------------------------------------------------------

def test_register_by_decorator_with_aliases_and_capabilities(reg):
    @reg.register("Gadget", aliases=("gizmo",), needs_edge_result=True)
    class Gadget:
        pass

    assert reg.get("Gadget") is Gadget and reg.get("gizmo") is Gadget
    assert reg.names() == ["Gadget"] and reg.names(aliases=True) == ["Gadget", "gizmo"]
    assert reg.canonical("gizmo") == "Gadget" and "gizmo" in reg and "nope" not in reg
    assert reg.capabilities("gizmo") == {"needs_labels": False, "needs_edge_result": True}
    assert dict(reg.view()) == {"Gadget": Gadget}
    reg.unregister("Gadget")
    assert reg.names(aliases=True) == []


def test_a_misspelt_capability_or_a_taken_name_is_an_error(reg):
    with pytest.raises(CeprError, match="unknown capability 'needs_label'; did you mean 'needs_labels'"):
        reg.register("A", needs_label=True)

    @reg.register("A")
    def a():
        pass

    with pytest.raises(CeprError, match="widget 'A' is already registered"):
        reg.register("A")(lambda: None)
    with pytest.raises(CeprError, match="widget 'A' is already registered"):
        reg.register("B", aliases=("A",))(lambda: None)
    reg.register("A")(a)  # the same object again (a module reloaded): fine


def test_capabilities_of_finds_a_plugin_by_its_object_or_a_registered_base(reg):
    @reg.register("Base", needs_labels=True)
    class Base:
        pass

    class Sub(Base):  # e.g. registered only with Sedna's ClassFactory
        pass

    class Other:
        pass

    assert reg.capabilities_of(Base)["needs_labels"] and reg.capabilities_of(Sub)["needs_labels"]
    assert reg.capabilities_of(Other) == CAPS


# ---- lazy targets ------------------------------------------------------------------------------------------

def test_a_lazy_target_is_imported_only_when_got(reg, tmp_path, monkeypatch, unloaded):
    write_module(tmp_path, "cepr_test_lazy_widget", """
        class Heavy:
            pass
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg.add_lazy("heavy", "cepr_test_lazy_widget:Heavy", needs_labels=True)
    assert reg.names() == ["heavy"] and reg.capabilities("heavy")["needs_labels"]
    assert "cepr_test_lazy_widget" not in sys.modules  # listing and capabilities import nothing
    cls = reg.get("heavy")
    assert cls.__name__ == "Heavy" and "cepr_test_lazy_widget" in sys.modules
    assert reg.get("heavy") is cls and reg.capabilities_of(cls)["needs_labels"]


def test_a_lazy_target_that_fails_to_import_names_the_plugin(reg):
    reg.add_lazy("broken", "cepr_no_such_module_anywhere:Thing")
    with pytest.raises(CeprError, match=r"widget 'broken' \(cepr_no_such_module_anywhere:Thing\) failed to import: "
                                        "ModuleNotFoundError"):
        reg.get("broken")


def test_import_cepr_and_the_registries_stay_light():
    code = ("import sys, cepr, cepr.registry, cepr.dispatch, cepr.metrics.joint, cepr.cloud.client, "
            "cepr.edge.reasoners\n"
            "from cepr.cloud.client import BACKEND_REGISTRY\n"
            "assert BACKEND_REGISTRY.names() == ['openai', 'transformers', 'vllm', 'grounded', 'inprocess'], "
            "BACKEND_REGISTRY.names()\n"
            "assert BACKEND_REGISTRY.capabilities('openai')['config_model'].endswith(':OpenAIBackendConfig')\n"
            "heavy = {'torch', 'vllm', 'openai', 'fastapi', 'uvicorn', 'transformers', 'llama_cpp',\n"
            "         'cepr.cloud.openai_backend', 'cepr.cloud.transformers_backend', 'cepr.cloud.vllm_backend',\n"
            "         'cepr.cloud.grounded_backend'}\n"
            "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- entry points ------------------------------------------------------------------------------------------

def test_an_entry_point_policy_is_discovered_lazily_and_used_by_name(tmp_path, monkeypatch, unloaded):
    from cepr.dispatch import POLICIES, POLICY_REGISTRY, create_policy

    write_module(tmp_path, "cepr_test_plugin_policy", """
        from cepr.dispatch import Policy, register_policy

        @register_policy("PluginPolicy", needs_edge_result=True)
        class PluginPolicy(Policy):
            name = "PluginPolicy"

            def __init__(self, cut=0.5):
                self.cut = float(cut)

            def __call__(self, x=None):
                return x["confidence"] < self.cut
    """)
    write_dist(tmp_path, "cepr_test_plugin", """
        [cepr.policies]
        PluginPolicy = cepr_test_plugin_policy:PluginPolicy
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "PluginPolicy" in POLICY_REGISTRY  # a miss reads the entry points again
        assert "PluginPolicy" in POLICIES
        assert "cepr_test_plugin_policy" not in sys.modules  # found, not imported
        policy = create_policy("PluginPolicy", cut="0.7")
        assert policy({"confidence": 0.6}) is True and policy({"confidence": 0.8}) is False
        assert POLICY_REGISTRY.capabilities("PluginPolicy")["needs_edge_result"] is True  # from its decorator
        assert POLICY_REGISTRY.capabilities_of(type(policy))["needs_edge_result"] is True
    finally:
        POLICY_REGISTRY.unregister("PluginPolicy")


def test_entry_points_naming_a_module_and_clashing_with_a_builtin(reg, tmp_path, monkeypatch, unloaded):
    reg.register("Builtin")(object)
    write_module(tmp_path, "cepr_test_plugin_widgets", """
        import tests_registry_under_test as r

        @r.REG.register("ModuleWidget", needs_labels=True)
        def module_widget():
            return "made"
    """)
    write_dist(tmp_path, "cepr_test_widgets", """
        [cepr.widgets]
        ModuleWidget = cepr_test_plugin_widgets
        Builtin = cepr_test_plugin_widgets:other
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "tests_registry_under_test", type(sys)("tests_registry_under_test"))
    sys.modules["tests_registry_under_test"].REG = reg
    with pytest.warns(RuntimeWarning, match="adds widget 'Builtin'.*already registered; ignored"):
        names = reg.names()
    assert names == ["Builtin", "ModuleWidget"] and reg.get("Builtin") is object
    assert reg.get("ModuleWidget")() == "made"  # the bare module registered the name when imported
    assert reg.capabilities("ModuleWidget")["needs_labels"] is True


# ---- did you mean ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("typo, hint", [("Gadgett", "Gadget"), ("GADGET", "Gadget"), ("gizmoo", "gizmo")])
def test_unknown_names_get_a_hint_and_the_list(reg, typo, hint):
    reg.register("Gadget", aliases=("gizmo",))(object)
    reg.register("Sprocket")(int)
    with pytest.raises(CeprError, match=rf"unknown widget '{typo}'; did you mean '{hint}'\? "
                                        r"\(widgets: Gadget, Sprocket\)"):
        reg.get(typo)


def test_the_builtin_registries_reject_typos_with_a_hint():
    from cepr.cloud.client import create_backend
    from cepr.dispatch import get_policy
    from cepr.edge.reasoners import create_reasoner
    from cepr.metrics.joint import get_metric

    for call, typo, hint in [(get_policy, "Treshold", "Threshold"), (create_reasoner, "planer", "planner"),
                             (lambda n: create_backend(n, {}), "OpenAI", "openai"), (get_metric, "acuracy", "accuracy")]:
        with pytest.raises(CeprError, match=f"did you mean '{hint}'"):
            call(typo)


# ---- the built-in registries -------------------------------------------------------------------------------

def test_builtin_policies_declare_their_capabilities():
    from cepr.compat import ORACLE_MARKED
    from cepr.dispatch import POLICY_REGISTRY

    caps = {n: POLICY_REGISTRY.capabilities(n) for n in POLICY_REGISTRY.names(aliases=True)}
    assert {n for n, c in caps.items() if c["needs_labels"]} == {"Oracle", "OracleRouter", ORACLE_MARKED}
    assert {n for n, c in caps.items() if c["upper_bound"]} == {"Oracle", "OracleRouter", ORACLE_MARKED}
    assert {n for n, c in caps.items() if c["needs_edge_result"]} == {
        "Oracle", "OracleRouter", ORACLE_MARKED, "CrossEntropy", "Threshold", "RiskAware", "Complexity", "Learned",
        "Budget", "NetworkAware"}


def test_a_backend_is_one_class_with_its_config_model(monkeypatch):
    from pydantic import BaseModel, ConfigDict

    from cepr.cloud.client import (
        BACKEND_REGISTRY,
        BACKENDS,
        backend_config_model,
        create_backend,
        register_backend,
    )
    from cepr.cloud.openai_backend import OpenAIBackendConfig

    class EchoConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        answer: str = "yes"

    @register_backend("echo", config_model=EchoConfig)
    class Echo:
        def __init__(self, config: dict):
            self.cfg = EchoConfig(**config)

    try:
        assert backend_config_model("openai") is OpenAIBackendConfig
        assert backend_config_model("inprocess") is OpenAIBackendConfig
        assert backend_config_model("echo") is EchoConfig and "echo" in BACKENDS
        assert create_backend("echo", {"answer": "no"}).cfg.answer == "no"
    finally:
        BACKEND_REGISTRY.unregister("echo")


def test_a_metric_is_one_decorated_function():
    from cepr.metrics import joint

    @joint.register_metric("always_half")
    def always_half(y_true, y_pred):
        return 0.5

    try:
        assert joint.get_metric("always_half") is always_half and joint.METRICS["always_half"]([], []) == 0.5
    finally:
        joint.METRIC_REGISTRY.unregister("always_half")
    assert "always_half" not in joint.METRICS
    assert joint.METRICS["accuracy"] is joint.accuracy and joint.get_metric("latency_p95") is joint.latency_p95
