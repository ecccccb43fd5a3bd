"""``cepr edge``: train, export, quantize and evaluate the RFNet-style segmentation models."""

from __future__ import annotations

import argparse
import itertools
import json

from cepr.cli.datasets import _resolution
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.layout import parse_resolution
from cepr.edge.calibrate import calibrate, format_calibration
from cepr.edge.evaluate import evaluate, format_reports
from cepr.edge.export import export_onnx, quantize_int8, save_weights
from cepr.edge.models import SHIPPED, model_path
from cepr.edge.train import TrainConfig, train
from cepr.errors import CeprError, DatasetError


def _size(text: str) -> tuple[int, int]:
    return parse_resolution(_resolution(text))


def add_parser(sub) -> None:
    p = sub.add_parser("edge", help="train / export / quantize / evaluate the edge segmentation models",
                       description="The edge perception model: an RFNet-style RGB-D network. Training and export "
                                   "need the `train` extra (torch==2.13.0); inference needs only onnxruntime.")
    esub = p.add_subparsers(dest="edge_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    for add in (_add_train, _add_export, _add_quantize, _add_eval, _add_calibrate):
        add(esub, argparse.ArgumentDefaultsHelpFormatter)


def _add_train(esub, fmt) -> None:
    t = esub.add_parser("train", help="train a model (resumes when --out holds last.pt)", formatter_class=fmt,
                        description="Train on a Cloud-Robotics-format dataset (train split; validation mIoU on "
                                    "the val split). Writes config.json, train_log.jsonl, last.pt, best.pt.")
    t.add_argument("--data", default="datasets/cloud-robotics-synth", help="dataset root, resolution dir or index")
    t.add_argument("--out", default="runs/edge", help="run directory")
    t.add_argument("--width", type=int, default=16, help="channels of the first encoder stage")
    t.add_argument("--blocks", type=int, nargs=4, default=[1, 1, 1, 1], metavar="N", help="blocks per stage")
    t.add_argument("--no-depth", action="store_true", help="RGB-only model (for data without depth)")
    t.add_argument("--input-size", type=_size, default=(320, 240), metavar="WxH", help="network input size")
    t.add_argument("--crop", type=_size, default=None, metavar="WxH",
                   help="train on random crops of full frames (for models that run on full frames)")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-train-frames", type=int, default=None)
    t.add_argument("--val-every", type=int, default=500)
    t.add_argument("--val-frames", type=int, default=60)
    t.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when torch sees a GPU. On CUDA, batches are assembled on the GPU and the "
                        "forward pass runs under bf16 autocast; the checkpoint and log format are the same")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)


def _add_export(esub, fmt) -> None:
    e = esub.add_parser("export", help="checkpoint -> ONNX FP32", formatter_class=fmt)
    e.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    e.add_argument("--out", required=True, help="output .onnx file")
    e.add_argument("--weights-out", help="also save the PyTorch weights without optimizer state (.pt)")
    e.set_defaults(func=cmd_export)


def _add_quantize(esub, fmt) -> None:
    q = esub.add_parser("quantize", help="ONNX FP32 -> static INT8 (QDQ), calibrated on training frames",
                        formatter_class=fmt)
    q.add_argument("--model", required=True, help="FP32 .onnx from `cepr edge export`")
    q.add_argument("--data", default="datasets/cloud-robotics-synth")
    q.add_argument("--out", required=True)
    q.add_argument("--calib-frames", type=int, default=64)
    q.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--keep-fp32", nargs="*", default=["stem"], metavar="GROUP",
                   help="node groups left in FP32: stem (the encoders' first convolutions), attention (SE gates), "
                        "head (30-class logits); finer: gate (the gates' pooling, 1x1 convolutions and sigmoid), "
                        "scale (their broadcast multiplies), fuse0 (the first fusion, at half resolution); "
                        "give none to quantise everything. Default: the stems only, the recipe measured fastest "
                        "on a VNNI CPU (benchmarks/quant_recipe.py, docs/edge.md)")
    q.add_argument("--quant-format", default="qdq", choices=["qdq", "qoperator"],
                   help="QuantizeLinear/DequantizeLinear pairs (fused by ONNX Runtime) or QLinear* operators")
    q.add_argument("--activation-type", default="u8", choices=["u8", "s8"],
                   help="activation type; weights are always s8")
    q.add_argument("--per-tensor", dest="per_channel", action="store_false",
                   help="one weight scale per tensor instead of per output channel")
    q.set_defaults(func=cmd_quantize)


def _add_eval(esub, fmt) -> None:
    v = esub.add_parser("eval", help="per-class IoU, mIoU, pixel accuracy and latency of model variants",
                        formatter_class=fmt,
                        description="Evaluate PyTorch / ONNX FP32 / ONNX INT8 forms of a model on the same frames; "
                                    "latency is measured with --threads threads (1 = one core).")
    v.add_argument("--data", default="datasets/cloud-robotics-synth")
    v.add_argument("--split", default="test", choices=["train", "val", "test"])
    v.add_argument("--checkpoint", help="PyTorch checkpoint or shipped name, e.g. edge-torch, edge-rgb-torch "
                                        "(needs the train extra)")
    v.add_argument("--fp32", help="ONNX FP32 model: a path or a shipped name (edge-fp32; edge-rgb-fp32 for data "
                                  "without depth)")
    v.add_argument("--int8", help="ONNX INT8 model: a path or a shipped name (edge-int8; edge-rgb-int8 for data "
                                  "without depth)")
    v.add_argument("--max-frames", type=int, default=None)
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("--json", dest="json_out", help="write the report as JSON")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=cmd_eval)


def _add_calibrate(esub, fmt) -> None:
    c = esub.add_parser("calibrate", help="fit the local planner's confidence; report answer accuracy and ECE",
                        formatter_class=fmt,
                        description="Run the edge pipeline (model -> summary -> planner), fit a per-task logistic "
                                    "confidence on --fit-split and report per-task accuracy against the task ground "
                                    "truth, ECE before/after and a reliability table on --eval-split.")
    c.add_argument("--model", required=True, help="ONNX model (FP32 or INT8): a path or a shipped name (edge-int8; "
                                                  "edge-rgb-int8 for data without depth)")
    c.add_argument("--data", default="datasets/cloud-robotics-synth")
    c.add_argument("--fit-split", default=None, choices=["train", "val", "test"],
                   help="default: val where the set has a val index, else train (the real set has no val split)")
    c.add_argument("--eval-split", default="test", choices=["train", "val", "test"])
    c.add_argument("--max-frames", type=int, default=None, help="per split")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--out", help="calibration JSON (default: next to the model)")
    c.add_argument("--no-depth", action="store_true",
                   help="ground-plane distances only (as the cloud expert must, from an image)")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_calibrate)


def cmd_calibrate(a) -> int:
    if not a.out and a.model in SHIPPED:
        raise CeprError("pass --out: the shipped models' directory is not the place for new calibration files")
    out = a.out or str(a.model).rsplit(".onnx", 1)[0] + ".calibration.json"
    fit_split = a.fit_split
    if fit_split is None:
        try:
            find_index(a.data, split="val")
            fit_split = "val"
        except DatasetError:  # no val index (the real Cloud-Robotics release has none)
            fit_split = "train"
            print(f"{a.data} has no val index: fitting the confidence on the train split")
    doc = calibrate(model_path(a.model), a.data, out, fit_split=fit_split, eval_split=a.eval_split,
                    max_frames=a.max_frames, threads=a.threads, progress=not a.no_progress,
                    depth_for_distance=not a.no_depth)
    print(format_calibration(doc))
    print(f"\nwrote {out}")
    return 0


def cmd_train(a) -> int:
    cfg = TrainConfig(data=a.data, out=a.out, width=a.width, blocks=tuple(a.blocks), use_depth=not a.no_depth,
                      input_size=tuple(a.input_size), crop=tuple(a.crop) if a.crop else None, steps=a.steps,
                      batch_size=a.batch_size, lr=a.lr, seed=a.seed, max_train_frames=a.max_train_frames,
                      val_every=a.val_every, val_frames=a.val_frames, threads=a.threads, device=a.device)
    r = train(cfg, progress=not a.no_progress)
    print(f"trained {r['steps']} steps in {r['seconds']:.0f} s on {r['device']}; {r['parameters']:,} parameters; "
          f"best val mIoU {100 * r['best_val_miou']:.2f}% -> {r['out']}/best.pt")
    return 0


def cmd_export(a) -> int:
    out = export_onnx(a.checkpoint, a.out)
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB)")
    if a.weights_out:
        w = save_weights(a.checkpoint, a.weights_out)
        print(f"saved weights {w} ({w.stat().st_size / 1e6:.2f} MB)")
    return 0


def cmd_quantize(a) -> int:
    out = quantize_int8(a.model, a.out, a.data, frames=a.calib_frames, seed=a.seed, method=a.method,
                        keep_fp32=tuple(a.keep_fp32), quant_format=a.quant_format, activation_type=a.activation_type,
                        per_channel=a.per_channel)
    print(f"quantized {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def cmd_eval(a) -> int:

    models = {}
    if a.checkpoint:
        models["pytorch"] = ("torch", str(model_path(a.checkpoint)))
    if a.fp32:
        models["onnx-fp32"] = ("onnx", str(model_path(a.fp32)))
    if a.int8:
        models["onnx-int8"] = ("onnx", str(model_path(a.int8)))
    if not models:
        raise CeprError("give at least one of --checkpoint, --fp32, --int8")
    ds = CloudRoboticsDataset(find_index(a.data, split=a.split))
    n = min(len(ds), a.max_frames or len(ds))
    reports = evaluate(itertools.islice(ds, n), models, threads=a.threads, progress=not a.no_progress)
    base = "onnx-fp32" if "onnx-fp32" in models else None
    print(f"{n} {a.split} frame(s) of {a.data}, {a.threads} thread(s)\n")
    print(format_reports(reports, baseline=base))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"frames": n, "split": a.split, "threads": a.threads,
                       "models": [r.to_dict() for r in reports]}, f, indent=1)
    return 0
