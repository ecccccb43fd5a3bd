"""vLLM's OpenAI-compatible server for a model folder, with speculative decoding as configuration.

vLLM lives in a virtual environment of its own (``cepr.llm.vllm_env``), so it always runs as a subprocess:
``<vllm python> -m vllm.entrypoints.openai.api_server`` on loopback. Two layers:

- ``cepr serve vllm`` (:func:`serve`, on top of :class:`VllmProcess`) starts that server in a process group of its
  own (vLLM spawns an engine-core process), waits until ``/v1/models`` answers, prints the URL, and kills the whole
  group on Ctrl-C, SIGTERM, or when the runner that started it (``CEPR_PARENT_PID``) is gone.
- :class:`VllmServer` (the Python API, and what ``server: vllm`` in a cloud module starts) runs ``cepr serve vllm``
  on a free port, the way ``cepr.servers.autoserve`` runs the other servers, and reads vLLM's own counters from
  ``/metrics``: :meth:`VllmServer.spec_counters`, :func:`parse_spec_counters`, :func:`acceptance_rate`.

CPU-safe defaults: ``VLLM_CPU_KVCACHE_SPACE`` (GiB) from ``kv_cache_gib`` (1), ``--dtype float32``, a short
``--max-model-len``, ``--enforce-eager`` (no torch.compile warm-up). See docs/vllm-cpu-notes.md.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from cepr.errors import CeprError
from cepr.llm.gemma_hf import cached_gemma_hf
from cepr.llm.spec_config import parse_speculative
from cepr.llm.vllm_env import find_vllm_python
from cepr.servers.autoserve import ReferenceServer, shared_server
from cepr.servers.base import PARENT_ENV, free_port

# vLLM's speculative-decoding counters on /metrics (Prometheus counters, one sample per engine/model label set)
SPEC_METRICS = {
    "vllm:spec_decode_num_drafts_total": "drafts",
    "vllm:spec_decode_num_draft_tokens_total": "draft_tokens",
    "vllm:spec_decode_num_accepted_tokens_total": "accepted_tokens",
}
GROUP_MARK = "cepr serve vllm: vLLM process group "
KEEP_LINES = 60


def parse_spec_counters(metrics_text: str) -> dict:
    """``{"drafts", "draft_tokens", "accepted_tokens"}`` from a ``/metrics`` page: each counter summed over its
    label sets, ``_created`` samples (timestamps) skipped; zeros when the server does not speculate."""
    out = dict.fromkeys(SPEC_METRICS.values(), 0)
    for line in metrics_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        name = line[:brace] if brace >= 0 else line.split()[0]
        key = SPEC_METRICS.get(name)
        if key is None:  # includes ..._created and the per-position counters
            continue
        rest = line[line.rindex("}") + 1:] if brace >= 0 else line[len(name):]
        out[key] += round(float(rest.split()[0]))
    return out


def acceptance_rate(before: dict, after: dict) -> float | None:
    """Accepted draft tokens / proposed draft tokens between two :func:`parse_spec_counters` readings; None when
    nothing was drafted in between (no speculation, or no request)."""
    drafted = after["draft_tokens"] - before["draft_tokens"]
    if drafted <= 0:
        return None
    return (after["accepted_tokens"] - before["accepted_tokens"]) / drafted


def counter_delta(before: dict, after: dict) -> dict:
    """The counters' increase between two readings, plus ``acceptance_rate`` (None without drafts)."""
    d = {k: after[k] - before[k] for k in SPEC_METRICS.values()}
    d["acceptance_rate"] = acceptance_rate(before, after)
    return d


def check_model(model) -> str:
    """An HF folder (config.json inside) or a .gguf file on this machine; a CeprError naming the problem. A shipped
    model's name (``gemma3-270m``) is its Hugging Face folder, made once from the packaged GGUF into the cache."""
    model = resolve_shipped_hf(model)
    p = Path(str(model)).expanduser()
    if not p.exists():
        raise CeprError(f"vLLM model {str(model)!r} does not exist (an HF folder, e.g. `cepr models tiny --out DIR` "
                        f"makes DIR/hf)")
    if p.is_dir() and not (p / "config.json").is_file():
        raise CeprError(f"vLLM model folder {str(p)!r} has no config.json (not a Hugging Face model folder)")
    if p.is_file() and p.suffix != ".gguf":
        raise CeprError(f"vLLM model {str(p)!r} is a file but not a .gguf; give an HF folder or a GGUF file")
    return str(p)


SHIPPED_HF = ("gemma3-270m",)  # GGUF packages that cepr.llm.gemma_hf turns into Hugging Face folders


def resolve_shipped_hf(model) -> str:
    """``model`` as it is, or for a shipped name that is not a path here, its cached Hugging Face folder
    (``cepr models gemma-hf``'s conversion, done on first use: about a minute, 1 GB in ~/.cache/cepr)."""
    name = str(model)
    if name in SHIPPED_HF and not Path(name).exists():
        return str(cached_gemma_hf(name))
    return name


def vllm_command(python: str, model: str, port: int, *, host: str = "127.0.0.1", speculative=None,
                 dtype: str = "float32", max_model_len: int = 1024, enforce_eager: bool = True,
                 tokenizer: str | None = None, compact_json: bool = True, extra_args=()) -> list[str]:
    """The command line of vLLM's OpenAI server for these settings (speculative: a mapping, checked here).
    ``compact_json``: JSON-constrained answers without optional whitespace (xgrammar's ``disable_any_whitespace``);
    otherwise a grammar lets a weak model spend its whole token budget on blanks inside the braces."""
    spec = parse_speculative(speculative)
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host,
           "--port", str(int(port)), "--dtype", dtype, "--max-model-len", str(int(max_model_len))]
    if tokenizer:
        cmd += ["--tokenizer", str(tokenizer)]
    if enforce_eager:
        cmd.append("--enforce-eager")
    if compact_json:
        cmd += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    if spec is not None:
        cmd += ["--speculative-config", spec.vllm_json()]
    return cmd + [str(a) for a in extra_args]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this process when the thread that started it dies (a killed ``cepr serve vllm``)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class VllmProcess:
    """vLLM's server as a direct child in its own process group: start, wait until ready, stop the group."""

    def __init__(self, model, *, port: int, host: str = "127.0.0.1", speculative=None, dtype: str = "float32",
                 max_model_len: int = 1024, python: str | None = None, kv_cache_gib: float = 1.0,
                 enforce_eager: bool = True, tokenizer: str | None = None, compact_json: bool = True, extra_args=(),
                 echo: bool = False):
        if kv_cache_gib <= 0:
            raise CeprError(f"kv_cache_gib must be positive, got {kv_cache_gib}")
        self.python = find_vllm_python(python)
        self.model = check_model(model)
        self.port, self.host = int(port), host
        self.url = f"http://{host}:{self.port}/v1"
        self.cmd = vllm_command(self.python, self.model, self.port, host=host, speculative=speculative, dtype=dtype,
                                max_model_len=max_model_len, enforce_eager=enforce_eager, tokenizer=tokenizer,
                                compact_json=compact_json, extra_args=extra_args)
        kv = f"{kv_cache_gib:g}" if float(kv_cache_gib).is_integer() else str(kv_cache_gib)
        self.env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": kv}
        self.env.pop(PARENT_ENV, None)  # that is cepr's wrapper's business, not vLLM's
        if not any(str(a).startswith(("--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp"))
                   for a in extra_args):
            # one rank: its worker runs inside the engine-core process instead of a third process of its own, which
            # saves a Python start with torch and vLLM (about 7 s of the 22 s a tiny model's server takes here)
            self.env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.echo = echo
        self.output: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", env=self.env, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509 - only prctl, no locks
        self._drain = threading.Thread(target=self._read_output, name=f"vllm-{self.port}-output", daemon=True)
        self._drain.start()

    def _read_output(self) -> None:
        try:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                self.output.append(line)
                if self.echo:
                    try:
                        print(line, flush=True)
                    except (OSError, ValueError):  # our own stdout is gone (the parent closed the pipe)
                        self.echo = False
        except (OSError, ValueError):
            pass

    def last_output(self) -> str:
        return "\n".join(self.output).strip()

    def wait_ready(self, startup_s: float = 180.0, stop: threading.Event | None = None) -> None:
        """Until ``/v1/models`` answers; a CeprError with vLLM's last lines if it exits or the time runs out."""
        deadline = time.time() + startup_s
        while time.time() < deadline:
            if stop is not None and stop.is_set():
                raise CeprError("vLLM: stopped before it was ready")
            if self.proc.poll() is not None:
                self._drain.join(5)
                raise CeprError(f"vLLM ({self.model}) exited at start-up (code {self.proc.returncode}); its last "
                                f"output:\n{self.last_output()}")
            try:
                urllib.request.urlopen(f"http://{self.host}:{self.port}/v1/models", timeout=2).read()
                return
            except OSError:
                time.sleep(0.25)
        raise CeprError(f"vLLM ({self.model}) did not answer /v1/models within {startup_s:.0f} s; its last "
                        f"output:\n{self.last_output()}")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group (server and engine core), SIGKILL what is left after ``grace_s``."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group is the server's pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.time() + min(grace_s, 5.0)  # the engine core may outlive the API server for a moment
        while _group_alive(pgid) and time.time() < deadline:
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        self._drain.join(5)
        if self.proc.stdout:
            self.proc.stdout.close()


def _signal_group(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def serve(model, *, port: int = 8002, host: str = "127.0.0.1", startup_s: float = 180.0, **kw) -> int:
    """``cepr serve vllm``: run until Ctrl-C / SIGTERM / vLLM exiting / the parent (``CEPR_PARENT_PID``) gone."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.environ.get(PARENT_ENV)
    parent_pid = int(parent) if parent and parent.isdigit() else None
    vp = VllmProcess(model, port=port, host=host, echo=True, **kw)
    print(f"cepr serve vllm: {' '.join(vp.cmd)}", flush=True)
    vp.start()
    print(f"{GROUP_MARK}{vp.proc.pid}", flush=True)
    try:
        vp.wait_ready(startup_s, stop)
        print(f"cepr serve vllm: ready on {vp.url}", flush=True)
        while not stop.wait(0.5):
            if vp.proc.poll() is not None:
                raise CeprError(f"vLLM exited (code {vp.proc.returncode}); its last output:\n{vp.last_output()}")
            if parent_pid is not None and os.getppid() != parent_pid:
                print(f"cepr serve vllm: the process that started this server (pid {parent_pid}) is gone: "
                      f"stopping", flush=True)
                break
    finally:
        vp.stop()
    return 0


class VllmServer(ReferenceServer):
    """vLLM's OpenAI server on a free loopback port (``cepr serve vllm`` in a subprocess that stops with this
    process). ``speculative``: a mapping checked by ``cepr.llm.spec_config`` (None: no speculation). Use as a
    context manager or call :meth:`stop`."""

    def __init__(self, model, *, speculative: dict | None = None, dtype: str = "float32", max_model_len: int = 1024,
                 python: str | None = None, kv_cache_gib: float = 1.0, enforce_eager: bool = True, extra_args=(),
                 startup_s: float = 180, tokenizer: str | None = None, compact_json: bool = True):
        self.python = find_vllm_python(python)  # errors here, before anything starts
        self.model = check_model(model)
        self.spec = parse_speculative(speculative)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._pgid: int | None = None
        cmd = [sys.executable, "-m", "cepr", "serve", "vllm", "--port", str(self.port), "--model", self.model,
               "--vllm-python", self.python, "--dtype", dtype, "--max-model-len", str(int(max_model_len)),
               "--kv-cache-gib", str(kv_cache_gib), "--startup-s", str(startup_s),
               "--enforce-eager" if enforce_eager else "--no-enforce-eager",
               "--compact-json" if compact_json else "--no-compact-json"]
        if self.spec is not None:
            cmd += ["--speculative", self.spec.vllm_json()]
        if tokenizer:
            cmd += ["--tokenizer", str(tokenizer)]
        cmd += [f"--vllm-arg={a}" for a in extra_args]
        self._launch_http(cmd, "/v1/models", f"vLLM ({self.model})", startup_s + 30)

    KEEP_LINES = KEEP_LINES

    def _read_output(self) -> None:
        try:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(GROUP_MARK):
                    self._pgid = int(line[len(GROUP_MARK):].strip())
                self.output.append(line)
        except (OSError, ValueError):
            pass

    def model_id(self) -> str:
        with urllib.request.urlopen(f"{self.url}/models", timeout=10) as r:
            return json.loads(r.read())["data"][0]["id"]

    def pids(self) -> list[int]:
        """This server's processes that still run: the ``cepr serve vllm`` wrapper and vLLM's process group (API
        server, engine core, worker), for the runner's per-case CPU and memory figures (Linux /proc)."""
        out = [self.proc.pid] if self.proc.poll() is None else []
        if self._pgid is not None:
            for d in Path("/proc").glob("[0-9]*"):
                try:
                    stat = (d / "stat").read_text()
                    if int(stat[stat.rindex(")") + 2:].split()[2]) == self._pgid:
                        out.append(int(d.name))
                except (OSError, ValueError, IndexError):
                    continue
        return out

    def metrics_text(self) -> str:
        """vLLM's Prometheus page (``/metrics`` on the same port)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
                return r.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as e:
            raise CeprError(f"vLLM's /metrics on port {self.port} did not answer: {e}") from None

    def spec_counters(self) -> dict:
        """``{"drafts", "draft_tokens", "accepted_tokens"}`` now (cumulative since start; zeros without
        speculation). Take two readings and :func:`acceptance_rate` them."""
        return parse_spec_counters(self.metrics_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # cepr serve vllm stops vLLM's whole group
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._pgid is not None and self.proc.returncode < 0:  # the wrapper was killed before it could stop
            # vLLM's group: finish its job (a wrapper that exited normally has stopped the group itself)
            deadline = time.time() + 10
            while _group_alive(self._pgid) and time.time() < deadline:
                _signal_group(self._pgid, signal.SIGTERM)
                time.sleep(0.2)
            _signal_group(self._pgid, signal.SIGKILL)
        self._drain.join(5)
        if self.proc.stdout:
            self.proc.stdout.close()

def vllm_server(model, *, speculative=None, dtype: str = "float32", max_model_len: int = 1024,
                python: str | None = None, kv_cache_gib: float = 1.0) -> VllmServer:
    """A running :class:`VllmServer` for these settings, started on first use and shared by every test case that
    asks for the same ones (``server: vllm`` with ``base_url: auto``); the job's ``shutdown_all`` stops it."""
    spec = parse_speculative(speculative)
    key = ("vllm", check_model(model), spec.vllm_json() if spec else None, dtype, int(max_model_len), python,
           float(kv_cache_gib))
    return shared_server(key, lambda: VllmServer(model, speculative=spec.vllm_config() if spec else None,
                                                 dtype=dtype, max_model_len=max_model_len, python=python,
                                                 kv_cache_gib=kv_cache_gib), f"vLLM ({model})")


class MetricsEndpoint:
    """vLLM's ``/metrics`` page of a server cepr did not start (``server_metrics_url`` in a cloud module): its
    speculative-decoding counters, read around every request exactly as for a :class:`VllmServer`. Behind a load
    balancer the page is one replica's, so it is only right when all traffic goes to that replica."""

    def __init__(self, url: str, model: str = ""):
        if not url.startswith(("http://", "https://")):
            raise CeprError(f"server_metrics_url must be an http(s) URL of vLLM's /metrics page, got {url!r}")
        self.url, self.model = url, model
        self.counted_by = f"{url} (vllm:spec_decode_*_total), before and after the test case"

    def metrics_text(self) -> str:
        try:
            with urllib.request.urlopen(self.url, timeout=10) as r:
                return r.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as e:
            raise CeprError(f"server_metrics_url {self.url} did not answer: {e}") from None

    def spec_counters(self) -> dict:
        return parse_spec_counters(self.metrics_text())
