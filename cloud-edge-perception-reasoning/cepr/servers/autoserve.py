"""Start the reference cloud expert server for a benchmark and stop it afterwards.

``base_url: auto`` in a cloud module asks for this: one ``cepr serve cloud`` subprocess per (model, threads,
sessions, execution providers) for the whole process, on a free local port, shared by every test case, stopped by :func:`shutdown_all` (the runner
calls it when the job ends; an ``atexit`` hook covers Ianvs). The server never outlives the process that
started it: it is told that process's id (``CEPR_PARENT_PID``) and exits when its parent changes, so a runner
killed with SIGKILL (no atexit) leaves no server behind.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from cepr.errors import CeprError

log = logging.getLogger(__name__)
_servers: dict[tuple, ReferenceServer] = {}
_lock = threading.Lock()
PARENT_ENV = "CEPR_PARENT_PID"
PARENT_POLL_S = 0.5


def watch_parent_from_env(poll_s: float = PARENT_POLL_S) -> threading.Thread | None:
    """In a server started by :class:`ReferenceServer`: a daemon thread that ends this process when the parent
    named by ``CEPR_PARENT_PID`` is gone (the parent changes when it dies: the orphan is re-parented). SIGTERM
    first (uvicorn shuts down), a hard exit 3 s later. Does nothing when the variable is unset."""
    want = os.environ.get(PARENT_ENV)
    if not want or not want.isdigit():
        return None
    want_pid = int(want)

    def watch():
        while os.getppid() == want_pid:
            time.sleep(poll_s)
        log.warning("cepr serve: the process that started this server (pid %d) is gone: exiting", want_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(3)
        os._exit(0)

    t = threading.Thread(target=watch, name="cepr-parent-watch", daemon=True)
    t.start()
    return t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReferenceServer:
    def __init__(self, model: str = "cloud", threads: int = 1, startup_s: float = 90.0, extra_args=(),
                 sessions: int | None = None, providers="cpu"):
        try:
            import fastapi  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise CeprError("base_url: auto starts the reference cloud expert, which needs the serve extra: "
                            "pip install -e '.[serve]'") from None
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "cepr", "serve", "cloud", "--port", str(self.port), "--model", str(model),
               "--threads", str(threads), *map(str, extra_args)]
        if sessions is not None:  # model sessions answering at once (None: the server's default)
            cmd += ["--sessions", str(int(sessions))]
        if providers_arg(providers) != "cpu":  # the default adds nothing to the command line
            cmd += ["--providers", providers_arg(providers)]
        self._launch(cmd, "/health", "the reference cloud expert", startup_s)

    def _launch(self, cmd: list[str], health: str, what: str, startup_s: float) -> None:
        """Start ``cmd`` and wait until ``health`` (a path on this server) answers; ``what`` names it in errors."""
        log.info("starting %s: %s", what, " ".join(cmd))
        env = {**os.environ, PARENT_ENV: str(os.getpid())}  # the server exits when this process is gone
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", env=env)
        # a thread drains the server's output for as long as it runs (a full pipe would block the server),
        # keeping the last lines for error messages
        self.output: collections.deque[str] = collections.deque(maxlen=self.KEEP_LINES)
        self._drain = threading.Thread(target=self._read_output, name=f"cepr-expert-{self.port}-output", daemon=True)
        self._drain.start()
        deadline = time.time() + startup_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self._drain.join(5)
                raise CeprError(f"{what} exited at start-up (code {self.proc.returncode}):\n{self.last_output()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}{health}", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise CeprError(f"{what} did not answer {health} within {startup_s:.0f} s; its last output:\n"
                        f"{self.last_output()}")

    KEEP_LINES = 50

    def _read_output(self) -> None:
        try:
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
        except (OSError, ValueError):  # the pipe was closed under us by stop()
            pass

    def last_output(self) -> str:
        """The server's last lines of output (stdout and stderr), for error messages."""
        return "\n".join(self.output).strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._drain.join(5)  # the pipe ends when the process does
        if self.proc.stdout:
            self.proc.stdout.close()


class LlamaCppServer(ReferenceServer):
    """``cepr serve llamacpp`` on a free loopback port: a GGUF model behind llama.cpp's OpenAI-compatible server."""

    def __init__(self, model: str = "gemma3-270m", threads: int = 1, speculative: str = "none",
                 draft_tokens: int = 10, n_ctx: int = 4096, startup_s: float = 120.0, mmproj: str | None = None):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise CeprError("server: llamacpp needs the llm extra: pip install -e '.[llm,serve]'") from None
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "cepr", "serve", "llamacpp", "--port", str(self.port), "--model", str(model),
               "--threads", str(threads), "--n-ctx", str(n_ctx), "--speculative", speculative,
               "--draft-tokens", str(draft_tokens)] + (["--mmproj", str(mmproj)] if mmproj else [])
        self._launch(cmd, "/v1/models", f"the llama.cpp server ({model})", startup_s)

    def model_id(self) -> str:
        import json

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
    import json

    return json.dumps(providers, sort_keys=True)


def reference_server_url(model: str = "cloud", threads: int = 1, sessions: int | None = None,
                         providers="cpu") -> str:
    """The base URL of a running reference expert, started on first use (one per model, threads and sessions;
    ``sessions`` None: the server's default)."""
    key = (str(model), int(threads), None if sessions is None else int(sessions), providers_arg(providers))
    with _lock:
        srv = _servers.get(key)
        if srv is not None and srv.proc.poll() is not None:
            log.warning("the reference cloud expert on port %d died (code %s); starting a new one. Its last "
                        "output:\n%s", srv.port, srv.proc.returncode, srv.last_output())
            srv = None
        if srv is None:
            kw = {} if key[-1] == "cpu" else {"providers": providers}  # the default: as before, no flag
            srv = _servers[key] = ReferenceServer(model, threads, sessions=sessions, **kw)
        return srv.url


def shutdown_all() -> None:
    with _lock:
        for srv in _servers.values():
            srv.stop()
        _servers.clear()


atexit.register(shutdown_all)
