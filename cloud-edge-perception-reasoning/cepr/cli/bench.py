"""``cepr bench``: benchmarks that print figures and ratios."""

from __future__ import annotations

import argparse
import json
import textwrap

from cepr.errors import CeprError


def write_json(r: dict, path: str) -> None:
    """A benchmark's figures as JSON (``--json``)."""
    with open(path, "w") as f:
        json.dump(r, f, indent=1)


class _DefaultsRawFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Option defaults in the help, description and examples as written."""


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (latency, ratios, bytes)",
                       description="Benchmarks that print figures and ratios. Run them on an idle machine.")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    e = bsub.add_parser("edge", help="edge pipeline: per-stage latency, INT8/FP32/PyTorch, summary bytes",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Per-stage latency of the INT8 edge pipeline on full-size frames, the "
                                    "network's latency and mIoU as PyTorch / ONNX FP32 / ONNX INT8 on the same "
                                    "frames, and the scene summary's bytes against the frame as PNG and JPEG.")
    e.add_argument("--data", default="datasets/cloud-robotics-synth-bench",
                   help="a data set with depth (the default job renders this one; or `cepr datasets synth`)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--frames", type=int, default=50)
    e.add_argument("--int8", default="edge-int8", help="INT8 model: shipped name or path")
    e.add_argument("--fp32", default="edge-fp32", help="FP32 model: shipped name or path ('' to skip)")
    e.add_argument("--checkpoint", default="edge-torch", help="PyTorch weights: shipped name or path ('' to skip)")
    e.add_argument("--calibration", default="edge-calibration", help="planner calibration ('' for none)")
    e.add_argument("--threads", type=int, default=1, help="onnxruntime and OpenCV threads; 1 = one core")
    e.add_argument("--providers", default="cpu",
                   help="ONNX Runtime execution provider(s) for the ONNX models: cpu, cuda, tensorrt, or a "
                        "comma-separated list tried in order (docs/edge.md)")
    e.add_argument("--distances", default="depth", choices=["depth", "ground-plane"],
                   help="where the summary's distances come from: the depth maps, or the ground plane as on data "
                        "without depth (the real Cloud-Robotics set)")
    e.add_argument("--json", dest="json_out", help="also write the figures as JSON")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_edge)
    c = bsub.add_parser("cloud", help="cloud server: throughput and latency against request concurrency",
                        formatter_class=_DefaultsRawFormatter,
                        description=textwrap.fill(
                            "Send the default job's cloud requests (question, camera, scene summary and a 640x480 "
                            "JPEG) to the reference cloud server, or any OpenAI-compatible endpoint, from several "
                            "threads at once and print requests/s and p50/p95 latency per concurrency level. "
                            "Without --base-url it starts `cepr serve cloud` on a free loopback port and stops it "
                            "afterwards. docs/backends.md (vLLM past one GPU)", 79),
                        epilog="examples:\n"
                               "  cepr bench cloud --concurrency 1,2,4,8 --repeat 3\n"
                               "  cepr bench cloud --base-url http://127.0.0.1:8000/v1 --request-model MODEL "
                               "--payload summary --concurrency 1,4,16,64 --json sweep.json\n")
    c.add_argument("--base-url", default=None, help="an OpenAI-compatible server already running "
                                                     "(e.g. http://127.0.0.1:8000/v1); default: start one")
    c.add_argument("--data", default="datasets/cloud-robotics-synth-bench")
    c.add_argument("--split", default="test", choices=["train", "val", "test"])
    c.add_argument("--frames", type=int, default=16, help="distinct request bodies (frames), sent in turn")
    c.add_argument("--requests", type=int, default=64, help="requests per concurrency level and repeat")
    c.add_argument("--concurrency", default="1,2,4,8", help="comma-separated levels")
    c.add_argument("--repeat", type=int, default=1, help="sweeps, interleaved; req/s is the median over them")
    c.add_argument("--warmup", type=int, default=None, help="requests sent first, not counted (default: "
                                                            "twice the highest level)")
    c.add_argument("--model", default="cloud", help="started server: shipped model name or ONNX path")
    c.add_argument("--threads", type=int, default=1, help="started server: intra-op threads per model session")
    c.add_argument("--sessions", type=int, default=None,
                   help="started server: model sessions answering at once (default: the server's)")
    c.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    c.add_argument("--request-model", default=None, metavar="NAME",
                   help="with --base-url: the model name the requests carry, the one that server serves (a vLLM "
                        "server refuses others; e.g. its --served-model-name); default: the reference expert's")
    c.add_argument("--payload", default="summary+image", choices=["summary+image", "summary"],
                   help="summary+image: the default job's (scene summary and a 640x480 JPEG); summary: text only, "
                        "for a model without image input")
    c.add_argument("--max-tokens", type=int, default=128, help="max_tokens of each request")
    c.add_argument("--wait-idle", type=float, default=None, metavar="SHARE",
                   help="on a shared machine: before each run wait (up to a minute) until the CPUs were this idle "
                        "(0..1) for a second")
    c.add_argument("--json", dest="json_out", help="also write the figures as JSON")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_cloud)
    s = bsub.add_parser(
        "stream", help="replay a sequence through the edge service at a frame rate, with faults",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Replay a sequence (its mp4 video, or its frames in index order) as the robot's camera into "
                    "the edge service in-process, at --fps for --seconds, and report end-to-end latency "
                    "p50/p95/p99, answer accuracy per window against the ground truth, drop rate, queue depth "
                    "over time, cloud share and bytes, with the counts of accepted, answered, dropped, shed, "
                    "dead-lettered and expired requests and of cloud answers after the deadline; exit 1 when a "
                    "ledger does not add up. Writes stream.json, CSV time series and stream.png (picked up by "
                    "`cepr report` when under the job's workspace). docs/stream-bench.md",
        epilog="examples:\n"
               "  cepr datasets synth --sequence --out datasets/walk0 --frames 200 --fps 10 --seed 0\n"
               "  cepr bench stream datasets/walk0 --fps 10 --seconds 20\n"
               "  cepr bench stream datasets/walk0 --fps 10 --seconds 20 --cloud-down 5:6\n"
               "  cepr bench stream datasets/walk0 --fps 10 --seconds 20 --cloud queue --cloud-down 5:6 "
               "--link congested\n"
               "  cepr bench stream datasets/Cloud-Robotics/640x480/test-index.txt --replay frames --fps 2")
    s.add_argument("sequence", help="a sequence's root, resolution directory, index file or mp4 video")
    s.add_argument("--fps", type=float, default=10.0, help="replay frame rate (default 10)")
    s.add_argument("--seconds", type=float, default=10.0, help="replay length (default 10)")
    s.add_argument("--replay", choices=["video", "frames"], default="video",
                   help="decode the sequence's video (default), or read its PNG frames in index order")
    s.add_argument("--tasks", nargs="+", default=["path_hazard"], help="standing questions on every frame")
    s.add_argument("-f", "--job", default="benchmarkingjob.yaml",
                   help="the job YAML giving the edge settings, dispatch policy and cloud backend")
    s.add_argument("--algorithm", default=None, help="which algorithm of the job (default: the service's choice)")
    s.add_argument("--cloud", choices=["direct", "queue"], default="direct",
                   help="direct: the cloud backend in worker threads; queue: Redis Streams with cloud workers")
    s.add_argument("--redis", default="embedded", help="queue: embedded (a local redis-server) or a redis:// URL")
    s.add_argument("--cloud-workers", type=int, default=1)
    s.add_argument("--cloud-pending", type=int, default=8,
                   help="cloud requests waiting before the oldest is shed (direct: threads' queue; queue: maxlen)")
    s.add_argument("--deadline", type=float, default=2.0, help="seconds within which a cloud answer upgrades")
    s.add_argument("--cloud-down", metavar="START:SECONDS", default=None,
                   help="fault: the cloud unreachable from START s for SECONDS s (queue: workers stopped)")
    s.add_argument("--link", metavar="PRESET", default=None,
                   help="fault: cloud traffic over this link preset (ideal, wifi, 5g, 4g, congested)")
    s.add_argument("--window", type=float, default=1.0, help="accuracy window in seconds")
    s.add_argument("--out", default="workspace/stream-bench", help="output folder (default under the workspace)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_stream)


def _providers(text: str):
    items = [x.strip() for x in text.split(",") if x.strip()]
    return items[0] if len(items) == 1 else items


def cmd_edge(a) -> int:
    from cepr.bench.edge import bench_edge, format_bench_edge
    from cepr.edge.models import model_path

    def opt(x):
        return str(model_path(x)) if x else None

    ckpt = None
    if a.checkpoint:
        try:
            import torch  # noqa: F401
            ckpt = opt(a.checkpoint)
        except ImportError:
            print("note: torch not installed (pip install -e '.[train]'): skipping the PyTorch column")
    r = bench_edge(a.data, opt(a.int8), opt(a.fp32), ckpt, opt(a.calibration), split=a.split, frames=a.frames,
                   threads=a.threads, progress=not a.no_progress, providers=_providers(a.providers), distances=a.distances)
    print(format_bench_edge(r))
    if a.json_out:
        write_json(r, a.json_out)
    return 0


def cmd_cloud(a) -> int:
    from cepr.bench.cloud import bench_cloud, format_bench_cloud

    try:
        levels = [int(x) for x in str(a.concurrency).split(",") if x.strip()]
    except ValueError:
        raise CeprError(f"--concurrency: comma-separated integers, got {a.concurrency!r}") from None
    if not levels or min(levels) < 1 or a.requests < 1 or a.repeat < 1 or a.frames < 1:
        raise CeprError("--concurrency levels, --requests, --repeat and --frames must be >= 1")
    if a.base_url and a.sessions is not None:
        print("note: --sessions applies to a server started here; it is ignored with --base-url")
    r = bench_cloud(a.base_url, a.data, a.split, a.frames, a.requests, levels, a.repeat, a.model, a.threads,
                    a.sessions, a.warmup, a.timeout, progress=not a.no_progress, wait_idle=a.wait_idle,
                    request_model=a.request_model, payload=a.payload, max_tokens=a.max_tokens)
    print(format_bench_cloud(r))
    if a.json_out:
        write_json(r, a.json_out)
    return 0 if all(lv["errors"] == 0 for lv in r["levels"]) else 1


def cmd_stream(a) -> int:
    from cepr.bench.stream import StreamBenchConfig, format_result, parse_window, run_stream_bench

    try:
        cfg = StreamBenchConfig(sequence=a.sequence, fps=a.fps, seconds=a.seconds, replay=a.replay, tasks=a.tasks,
                                job=a.job, algorithm=a.algorithm, cloud=a.cloud, redis=a.redis,
                                cloud_workers=a.cloud_workers, cloud_pending=a.cloud_pending, deadline_s=a.deadline,
                                cloud_down=parse_window(a.cloud_down) if a.cloud_down else None, link=a.link,
                                window_s=a.window)
    except ValueError as e:  # pydantic: the option's message
        raise CeprError(str(e)) from None
    r = run_stream_bench(cfg, a.out, progress=not a.no_progress)
    print(format_result(r))
    print(f"-> {a.out}/stream.json, stream_timeseries.csv, stream_windows.csv, stream_answers.csv, stream.png")
    return 0 if r["counts_add_up"] else 1
