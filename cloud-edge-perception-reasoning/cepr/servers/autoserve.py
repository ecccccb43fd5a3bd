"""Start the reference cloud expert server for a benchmark and stop it afterwards.

``base_url: auto`` in a cloud module asks for this: one ``cepr serve cloud`` subprocess per (model, threads,
sessions, execution providers) for the whole process, on a free local port, shared by every test case, stopped by :func:`shutdown_all` (the runner
calls it when the job ends; an ``atexit`` hook covers Ianvs). The server never outlives the process that
started it: it is told that process's id (``CEPR_PARENT_PID``) and exits when its parent changes, so a runner
killed with SIGKILL (no atexit) leaves no server behind.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import urllib.request

from cepr.errors import CeprError
from cepr.servers.base import ManagedServer, free_port, http_ready

log = logging.getLogger(__name__)
_servers: dict[tuple, ReferenceServer] = {}
_lock = threading.Lock()


class ReferenceServer(ManagedServer):
    """``cepr serve cloud`` (the reference expert) on a free loopback port; the base of the other HTTP servers."""

    def __init__(self, model: str = "cloud", threads: int = 1, startup_s: float = 90.0, extra_args=(),
                 sessions: int | None = None, providers="cpu", what: str = "the reference cloud expert"):
        try:
            import fastapi  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise CeprError("base_url: auto starts the reference cloud expert, which needs the serve extra: "
                            "pip install -e '.[serve]'") from None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "cepr", "serve", "cloud", "--port", str(self.port), "--model", str(model),
               "--threads", str(threads), *map(str, extra_args)]
        if sessions is not None:  # model sessions answering at once (None: the server's default)
            cmd += ["--sessions", str(int(sessions))]
        if providers_arg(providers) != "cpu":  # the default adds nothing to the command line
            cmd += ["--providers", providers_arg(providers)]
        self._launch_http(cmd, "/health", what, startup_s)

    def _launch_http(self, cmd: list[str], health: str, what: str, startup_s: float) -> None:
        """Start ``cmd`` and wait until ``health`` (a path on this server) answers; ``what`` names it in errors."""
        self.what = what
        self._launch(cmd, http_ready(f"http://127.0.0.1:{self.port}{health}"), startup_s,
                     waiting_for=f"answer {health}")


class LlamaCppServer(ReferenceServer):
    """``cepr serve llamacpp`` on a free loopback port: a GGUF model behind llama.cpp's OpenAI-compatible server."""

    def __init__(self, model: str = "gemma3-270m", threads: int = 1, speculative: str = "none",
                 draft_tokens: int = 10, n_ctx: int = 4096, startup_s: float = 120.0, mmproj: str | None = None):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise CeprError("server: llamacpp needs the llm extra: pip install -e '.[llm,serve]'") from None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "cepr", "serve", "llamacpp", "--port", str(self.port), "--model", str(model),
               "--threads", str(threads), "--n-ctx", str(n_ctx), "--speculative", speculative,
               "--draft-tokens", str(draft_tokens)] + (["--mmproj", str(mmproj)] if mmproj else [])
        self._launch_http(cmd, "/v1/models", f"the llama.cpp server ({model})", startup_s)

    def model_id(self) -> str:
        with urllib.request.urlopen(f"{self.url}/models", timeout=5) as r:
            return json.loads(r.read())["data"][0]["id"]


def llamacpp_server(model: str = "gemma3-270m", threads: int = 1, speculative: str = "none",
                    draft_tokens: int = 10, n_ctx: int = 4096, mmproj: str | None = None) -> LlamaCppServer:
    """A running llama.cpp server for these settings, started on first use and shared (stopped by
    :func:`shutdown_all`, like the reference expert)."""
    key = ("llamacpp", str(model), int(threads), str(speculative), int(draft_tokens), int(n_ctx), mmproj)
    with _lock:
        srv = _servers.get(key)
        if srv is not None and srv.proc.poll() is not None:
            log.warning("the llama.cpp server on port %d died (code %s); starting a new one", srv.port,
                        srv.proc.returncode)
            srv = None
        if srv is None:
            srv = _servers[key] = LlamaCppServer(model, threads, speculative, draft_tokens, n_ctx, mmproj=mmproj)
        return srv


def shared_server(key: tuple, start, what: str):
    """The running server stored under ``key``, or ``start()``'s, stored there (and stopped by :func:`shutdown_all`);
    one that died is replaced, with a warning naming ``what``."""
    with _lock:
        srv = _servers.get(key)
        if srv is not None and srv.proc.poll() is not None:
            log.warning("%s on port %d died (code %s); starting a new one. Its last output:\n%s", what, srv.port,
                        srv.proc.returncode, srv.last_output())
            srv = None
        if srv is None:
            srv = _servers[key] = start()
        return srv


def server_pids() -> list[int]:
    """Process ids of the reference servers this process started and that still run (for resource figures)."""
    with _lock:
        out = []
        for srv in _servers.values():
            if callable(getattr(srv, "pids", None)):  # a server with processes of its own (vLLM's)
                out += srv.pids()
            elif srv.proc.poll() is None:
                out.append(srv.proc.pid)
        return out


def providers_arg(providers) -> str:
    """``cepr serve cloud --providers``'s value for a providers setting: a name or a comma-separated list as it is,
    JSON for anything else (provider options)."""
    if isinstance(providers, str):
        return providers
    if isinstance(providers, (list, tuple)) and all(isinstance(p, str) for p in providers):
        return ",".join(providers)

    return json.dumps(providers, sort_keys=True)


def _running(key: tuple, what: str, start) -> str:
    """The base URL of the server registered under ``key``, started by ``start()`` on first use or when the one
    there died (``what`` names it in the warning)."""
    with _lock:
        srv = _servers.get(key)
        if srv is not None and srv.proc.poll() is not None:
            log.warning("%s on port %d died (code %s); starting a new one. Its last output:\n%s", what, srv.port,
                        srv.proc.returncode, srv.last_output())
            srv = None
        if srv is None:
            srv = _servers[key] = start()
        return srv.url


def reference_server_url(model: str = "cloud", threads: int = 1, sessions: int | None = None,
                         providers="cpu") -> str:
    """The base URL of a running reference expert, started on first use (one per model, threads and sessions;
    ``sessions`` None: the server's default)."""
    key = (str(model), int(threads), None if sessions is None else int(sessions), providers_arg(providers))
    kw = {} if key[-1] == "cpu" else {"providers": providers}  # the default: as before, no flag
    return _running(key, "the reference cloud expert",
                    lambda: ReferenceServer(model, threads, sessions=sessions, **kw))


def grounded_server_url(vlm: str, engine: str = "vllm", quant: str = "q8_0", threads: int = 1,
                        vllm_python: str | None = None) -> str:
    """The base URL of a running ``cepr serve cloud --vlm`` (a grounded VLM, its decoder on ``engine``), started
    on first use, one per settings."""
    what = f"the grounded VLM service ({vlm}, {engine})"
    extra = ["--vlm", str(vlm), "--vlm-engine", engine, "--vlm-quant", quant]
    if vllm_python:
        extra += ["--vllm-python", vllm_python]
    return _running(("grounded", str(vlm), engine, quant, int(threads), vllm_python), what,
                    lambda: ReferenceServer("cloud", threads, startup_s=300.0, extra_args=extra, what=what))


def shutdown_all() -> None:
    with _lock:
        for srv in _servers.values():
            srv.stop()
        _servers.clear()


atexit.register(shutdown_all)
