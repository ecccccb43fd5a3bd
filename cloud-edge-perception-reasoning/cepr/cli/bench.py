"""``cepr bench``: benchmarks that print figures and ratios."""

from __future__ import annotations

import argparse


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
    e.add_argument("--data", default="datasets/cloud-robotics-synth")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--frames", type=int, default=50)
    e.add_argument("--int8", default="edge-int8", help="INT8 model: shipped name or path")
    e.add_argument("--fp32", default="edge-fp32", help="FP32 model: shipped name or path ('' to skip)")
    e.add_argument("--checkpoint", default="edge-torch", help="PyTorch weights: shipped name or path ('' to skip)")
    e.add_argument("--calibration", default="edge-calibration", help="planner calibration ('' for none)")
    e.add_argument("--threads", type=int, default=1, help="1 = one core")
    e.add_argument("--json", dest="json_out", help="also write the figures as JSON")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_edge)


def cmd_edge(a) -> int:
    from cepr.bench.edge import bench_edge, format_bench_edge, write_json
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
                   threads=a.threads, progress=not a.no_progress)
    print(format_bench_edge(r))
    if a.json_out:
        write_json(r, a.json_out)
    return 0
