"""The ``cepr`` command line. Each concern adds its own sub-commands; imports stay lazy so ``--help`` is fast."""

from __future__ import annotations

import argparse
import logging
import sys

from cepr import __version__
from cepr.errors import CeprError


def build_parser() -> argparse.ArgumentParser:
    # here, not at the top: each command's module imports this package's helpers (cepr.cli.formatting)
    from cepr.cli import bench, datasets, dispatch, edge, llm, models, report, run, serve, stream, sweep, vlm

    p = argparse.ArgumentParser(
        prog="cepr",
        description="Cloud-Edge Perception & Reasoning: benchmark and pipeline for robots that split "
                    "perception (edge) and reasoning (cloud). Runs Ianvs-format jobs offline on a CPU.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  cepr datasets synth --out datasets/cloud-robotics-synth --frames 200\n"
               "  cepr datasets check datasets/cloud-robotics-synth\n"
               "  cepr datasets stats datasets/cloud-robotics-synth --split test\n"
               "  cepr run -f benchmarkingjob.yaml\n"
               "  cepr sweep -f benchmarkingjob.yaml\n"
               "  cepr report workspace/cepr-default\n"
               "  cepr models tiny --out models/tiny\n",
    )
    p.add_argument("--version", action="version", version=f"cepr {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    datasets.add_parser(sub)
    edge.add_parser(sub)
    bench.add_parser(sub)
    serve.add_parser(sub)
    models.add_parser(sub)
    llm.add_parser(sub)
    vlm.add_parser(sub)
    run.add_parser(sub)
    sweep.add_parser(sub)
    report.add_parser(sub)
    dispatch.add_parser(sub)
    stream.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # one line per HTTP request drowns the progress bars
        for noisy in ("httpx", "httpx2", "openai"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CeprError as e:
        if args.verbose:
            raise
        print(f"cepr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cepr: interrupted", file=sys.stderr)
        return 130
