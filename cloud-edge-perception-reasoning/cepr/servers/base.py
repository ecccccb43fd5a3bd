"""The lifecycle every server cepr starts shares: a free loopback port, a child process whose output is drained
into a bounded tail (a full pipe would block it; start-up errors quote the tail), a readiness check before
first use, a stop that terminates and then kills, and a child that does not outlive the process that started
it (``CEPR_PARENT_PID``, watched by the child, or Linux's parent-death signal where the child is not ours)."""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Self

from cepr.errors import CeprError

log = logging.getLogger(__name__)
PARENT_ENV = "CEPR_PARENT_PID"
PARENT_POLL_S = 0.5


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def watch_parent_from_env(poll_s: float = PARENT_POLL_S) -> threading.Thread | None:
    """In a server started by :class:`ManagedServer`: a daemon thread that ends this process when the parent
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


class ManagedServer:
    """One server child process. Subclasses set ``self.port`` and call :meth:`_launch` (or :meth:`_spawn` and
    :meth:`_wait_ready` for a child that logs elsewhere); ``what`` names the server in errors."""

    KEEP_LINES = 50
    what = "the server"
    proc: subprocess.Popen | None = None

    def _launch(self, cmd: list[str], ready: Callable[[], bool], startup_s: float, env: dict | None = None,
                waiting_for: str = "get ready") -> None:
        """Start ``cmd`` (stdout and stderr drained into :meth:`last_output`) with ``CEPR_PARENT_PID`` set, and
        wait until ``ready()``."""
        log.info("starting %s: %s", self.what, " ".join(cmd))
        env = {**(env if env is not None else os.environ), PARENT_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", env=env)
        self.output: collections.deque[str] = collections.deque(maxlen=self.KEEP_LINES)
        self._drain = threading.Thread(target=self._read_output, name=f"cepr-server-{self.port}-output",
                                       daemon=True)
        self._drain.start()
        self._wait_ready(ready, startup_s, waiting_for)

    def _wait_ready(self, ready: Callable[[], bool], startup_s: float, waiting_for: str = "get ready",
                    poll_s: float = 0.1) -> None:
        """Poll ``ready()`` until it is true; a CeprError with the server's last output when the child exits or
        ``startup_s`` runs out (the child is then stopped)."""
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                drain = getattr(self, "_drain", None)
                if drain is not None:
                    drain.join(5)
                raise CeprError(f"{self.what} exited at start-up (code {self.proc.returncode}):\n"
                                f"{self.last_output()}")
            if ready():
                return
            time.sleep(poll_s)
        self.stop()
        raise CeprError(f"{self.what} did not {waiting_for} within {startup_s:.0f} s; its last output:\n"
                        f"{self.last_output()}")

    def _read_output(self) -> None:
        try:
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
        except (OSError, ValueError):  # the pipe was closed under us by stop()
            pass

    def last_output(self) -> str:
        """The server's last lines of output (stdout and stderr), for error messages."""
        return "\n".join(getattr(self, "output", ())).strip()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; the output pipe is closed once drained."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_output()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)
        self._close_output()

    def _close_output(self) -> None:
        drain = getattr(self, "_drain", None)
        if drain is not None:
            drain.join(5)  # the pipe ends when the process does
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def http_ready(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    """A readiness check: ``url`` answers a GET."""

    def ready() -> bool:
        try:
            urllib.request.urlopen(url, timeout=timeout).read()
            return True
        except OSError:
            return False
    return ready
