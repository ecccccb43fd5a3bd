"""Choose the edge model's INT8 quantisation recipe by measurement.

For each recipe of a grid (which node groups stay FP32, QDQ or QOperator, per-channel or per-tensor weights,
u8 or s8 activations, ONNX Runtime's graph optimisation level and a few real session config keys), this
quantises the shipped FP32 model with ``cepr.edge.export.quantize_int8`` (calibrated on the train split of the
calibration set, as ``cepr edge quantize`` does), then:

- times the network (one thread, ``session.run`` only) of FP32 and INT8 *interleaved*: the two sessions
  alternate run by run over a few prepared test frames, many repetitions, medians. The FP32 session is always
  the shipped configuration (``ORT_ENABLE_ALL``), so the ratio is what a recipe gains over what FP32 gives today;
- scores mIoU of INT8 and FP32 on the test frames of ``--data`` (network at 320x240, class map upsampled to the
  frame, one confusion matrix over all frames, as ``cepr edge eval``).

The machine may be shared: the interleaving makes the FP32/INT8 ratio robust to load that drifts slowly, and
the medians to load spikes. Run it twice and compare before trusting a second decimal.

    python benchmarks/quant_recipe.py                              # the whole grid, RGB-D edge model
    python benchmarks/quant_recipe.py --recipes shipped best --json /tmp/qr.json
    python benchmarks/quant_recipe.py --model edge-rgb-fp32 --recipes shipped best
    python benchmarks/quant_recipe.py --profile --recipes best     # + per-operator profile, FP32 and INT8
    python benchmarks/quant_recipe.py --list                       # the recipes and what they set

Needs the train extra (onnx, for quantisation). ``--calib-data`` defaults to the 2,000-frame synthetic set the
shipped models were calibrated on, ``datasets/cloud-robotics-synth`` (render it with ``cepr datasets synth --out
datasets/cloud-robotics-synth --frames 2000 --seed 0``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

OPT_LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
if hasattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT"):  # newer ORT: layout transforms as their own level
    OPT_LEVELS["layout"] = ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT


@dataclass(frozen=True)
class Recipe:
    name: str
    keep_fp32: tuple[str, ...] = ("stem", "attention", "head")
    quant_format: str = "qdq"
    per_channel: bool = True
    activation_type: str = "u8"
    opt_level: str = "all"
    # ONNX Runtime session config entries (onnxruntime_session_options_config_keys.h), INT8 session only
    config: tuple[tuple[str, str], ...] = ()
    note: str = ""

    def quant_key(self):
        return (self.keep_fp32, self.quant_format, self.per_channel, self.activation_type)

    def quant_kwargs(self) -> dict:
        return {"keep_fp32": self.keep_fp32, "quant_format": self.quant_format, "per_channel": self.per_channel,
                "activation_type": self.activation_type}


SHIPPED = ("stem", "attention", "head")
QDQ_CLEANUP = (("session.enable_quant_qdq_cleanup", "1"),)  # drop Q->DQ pairs around FP32 nodes
S8_ALLOWED = (("session.qdqisint8allowed", "1"),)  # keep s8 activations (x86 converts them to u8 by default)
NO_NHWC = (("optimization.disable_specified_optimizers", "NhwcTransformer"),)  # QLinearConv stays NCHW
# u8u8 instead of u8s8 products where weights exceed 7 bits, against saturation on x86 without VNNI (no effect on a
# CPU with VNNI, where u8s8 does not saturate)
U8U8 = (("session.x64quantprecision", "1"),)


def _grid() -> list[Recipe]:
    r = [Recipe("shipped", note="today's edge-int8 recipe")]
    # which groups stay FP32 (stem, attention, head, and attention's finer parts)
    subsets = {"none": (), "stem": ("stem",), "attention": ("attention",), "head": ("head",),
               "stem+head": ("stem", "head"), "stem+attention": ("stem", "attention"),
               "attention+head": ("attention", "head"), "stem+scale": ("stem", "scale"),
               "stem+gate": ("stem", "gate"), "stem+fuse0": ("stem", "fuse0"),
               "stem+fuse0+head": ("stem", "fuse0", "head"), "stem+scale+head": ("stem", "scale", "head"),
               "stem+fuse0+gate": ("stem", "fuse0", "gate")}
    for k, keep in subsets.items():
        r.append(Recipe(f"keep:{k}", keep_fp32=keep))
    # format, weight granularity, activation type, session options: on the shipped subset and on stem only
    for base_name, keep in (("shipped", SHIPPED), ("stem", ("stem",))):
        r.append(Recipe(f"{base_name}/qoperator", keep_fp32=keep, quant_format="qoperator"))
        r.append(Recipe(f"{base_name}/per-tensor", keep_fp32=keep, per_channel=False))
        r.append(Recipe(f"{base_name}/s8s8", keep_fp32=keep, activation_type="s8"))
        r.append(Recipe(f"{base_name}/s8s8+int8allowed", keep_fp32=keep, activation_type="s8", config=S8_ALLOWED))
        r.append(Recipe(f"{base_name}/qdq-cleanup", keep_fp32=keep, config=QDQ_CLEANUP))
        r.append(Recipe(f"{base_name}/no-nhwc", keep_fp32=keep, config=NO_NHWC))
        r.append(Recipe(f"{base_name}/x64quantprecision", keep_fp32=keep, config=U8U8))
        for lvl in ("basic", "extended") + (("layout",) if "layout" in OPT_LEVELS else ()):
            r.append(Recipe(f"{base_name}/opt-{lvl}", keep_fp32=keep, opt_level=lvl))
    # the chosen recipe (docs/edge.md, "Choosing the INT8 recipe"): only the stems stay FP32. In the full grid it
    # is built once and timed twice (as keep:stem and as best), which shows the run-to-run noise.
    r.append(Recipe("best", keep_fp32=("stem",), note="the chosen recipe (docs/edge.md)"))
    return r


RECIPES = {x.name: x for x in _grid()}
# the 2,000-frame synthetic set the shipped models were calibrated on (`cepr datasets synth --frames 2000 --seed 0`)
CALIB_DATA = ("datasets/cloud-robotics-synth",)


def session(path, opt_level="all", config=(), threads=1, profile_prefix=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = OPT_LEVELS[opt_level]
    so.log_severity_level = 3
    for k, v in config:
        so.add_session_config_entry(k, v)
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def load_frames(data: str, split: str, frames: int | None, cfg: dict):
    """Prepared network feeds and truth labels of ``frames`` frames (all when None) of a split."""
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.edge.preprocess import prepare_depth, prepare_rgb

    ds = CloudRoboticsDataset(find_index(data, split=split))
    n = len(ds) if frames is None else min(frames, len(ds))
    size = tuple(cfg["input_size"])
    feeds, labels = [], []
    for i in range(n):
        s = ds[i]
        feed = {"rgb": prepare_rgb(s.rgb, size)[None]}
        if cfg["use_depth"]:
            feed["depth"] = prepare_depth(s.depth, size)[None]
        feeds.append(feed)
        labels.append(s.label)
    return feeds, labels


def miou(sess, feeds, labels) -> float:
    from cepr.edge.preprocess import upsample_argmax
    from cepr.metrics.segmentation import ConfusionMatrix

    cm = ConfusionMatrix()
    for feed, label in zip(feeds, labels):
        logits = sess.run(["logits"], feed)[0][0]
        h, w = label.shape
        cm.update(label, upsample_argmax(logits, w, h))
    return cm.miou()


def interleaved_times(sessions: list, feeds, reps: int, warmup: int = 10) -> list[np.ndarray]:
    """ms of every timed run of each session; the sessions take turns run by run (order alternating per round),
    so load that changes slowly hits them alike."""
    for s in sessions:
        for i in range(warmup):
            s.run(["logits"], feeds[i % len(feeds)])
    times = [[] for _ in sessions]
    order = list(range(len(sessions)))
    for r in range(reps):
        feed = feeds[r % len(feeds)]
        for j in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            sessions[j].run(["logits"], feed)
            times[j].append(time.perf_counter() - t)
    return [1e3 * np.asarray(t) for t in times]


def conv_kinds(fp32_path) -> dict[str, str]:
    """Original Conv node name -> what it computes: "3x3", "1x1", "3x3 (stem)" (1 or 3 input channels) or
    "(gate, 1x1 map)" (the attention gates' convolutions, which run on pooled 1x1 maps)."""
    import onnx

    g = onnx.load(str(fp32_path)).graph
    dims = {i.name: list(i.dims) for i in g.initializer}
    kinds = {}
    for n in g.node:
        if n.op_type == "Conv" and n.input[1] in dims:
            w = dims[n.input[1]]
            if "/fc1/" in n.name or "/fc2/" in n.name:
                kinds[n.name] = "(gate, 1x1 map)"
            else:
                kinds[n.name] = f"{w[2]}x{w[3]}" + (" (stem)" if w[1] <= 3 else "")
    return kinds


def _conv_kind(op: str, node: str, shapes: list, kinds: dict) -> str:
    """Conv / QLinearConv profile events split by what they compute. Quantised nodes keep the original node's
    name (plus a suffix); FP32 convolutions fused by ORT are renamed, so those are told apart by their input
    shapes, which ORT records."""
    base = re.sub(r"(_token_\d+|_quant)?_kernel_time$", "", node)
    if base in kinds:
        return f"{op} {kinds[base]}"
    try:
        vals = [next(iter(d.values())) for d in shapes]
        x, w = vals[0], vals[1]
        if x[2:] == [1, 1]:
            return f"{op} (gate, 1x1 map)"
        return f"{op} {w[2]}x{w[3]}" + (" (stem)" if w[1] <= 3 else "")
    except (IndexError, KeyError, StopIteration, TypeError):
        return op


def op_profile(sess, feeds, runs: int, kinds: dict) -> tuple[float, list[tuple[str, float, float, int]]]:
    """Runs ``sess`` (made with profiling on) ``runs`` times; per operator type: ms per run, share, nodes.

    Times are ONNX Runtime's per-node kernel times (``*_kernel_time`` events), medians per node over the runs
    (robust to other processes), summed per operator; the session's own overhead between nodes is not in them.
    Convolutions are split by kernel size, with the stems (1 or 3 input channels) and the attention gates'
    convolutions on 1x1 maps apart."""
    for i in range(runs):
        sess.run(["logits"], feeds[i % len(feeds)])
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.unlink(path)
    per_node, kind = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            args = e.get("args", {})
            op = args.get("op_name", "?")
            if op in ("Conv", "QLinearConv"):
                op = _conv_kind(op, e["name"], args.get("input_type_shape", []), kinds)
            per_node[e["name"]].append(e["dur"])
            kind[e["name"]] = op
    dur, nodes = collections.Counter(), collections.Counter()
    for name, ds in per_node.items():
        dur[kind[name]] += float(np.median(ds)) / 1e3
        nodes[kind[name]] += 1
    total = sum(dur.values())
    rows = [(op, d, d / total, nodes[op]) for op, d in dur.most_common()]
    return total, rows


def amdahl(fp32_rows, gains=(2.0, 3.0, 4.0, float("inf"))) -> dict:
    """FP32/INT8 ratio the whole network could reach if only its 3x3 convolutions past the stems (what INT8 speeds
    up here, benchmarks/int8_conv_ceiling.py) ran ``gain`` times faster and everything else kept its FP32 time."""
    total = sum(r[1] for r in fp32_rows)
    fast = sum(r[1] for r in fp32_rows if r[0] == "Conv 3x3")
    return {"share_3x3": fast / total, **{f"{g:g}x": total / (total - fast + fast / g) for g in gains}}


@dataclass
class Result:
    recipe: dict
    int8_ms: float
    fp32_ms: float
    ratio: float
    miou: float
    fp32_miou: float
    drop_points: float
    size_mb: float
    quantize_s: float
    int8_p10_ms: float = 0.0  # 10th percentiles: the runs least disturbed by other processes
    fp32_p10_ms: float = 0.0
    ratio_p10: float = 0.0
    load: float = 0.0  # 1-minute load average after timing
    profile: dict = field(default_factory=dict)


def format_table(results: list[Result]) -> str:
    head = (f"{'recipe':<34} {'INT8 ms':>8} {'FP32 ms':>8} {'ratio':>6} {'p10 ratio':>9} {'mIoU':>7} {'drop':>6} "
            f"{'MB':>5} {'load':>5}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.recipe['name']:<34} {r.int8_ms:>8.3f} {r.fp32_ms:>8.3f} {r.ratio:>5.2f}x {r.ratio_p10:>8.2f}x "
                     f"{100 * r.miou:>6.2f}% {r.drop_points:>+6.2f} {r.size_mb:>5.2f} {r.load:>5.1f}")
    return "\n".join(lines)


def format_profile(name: str, total_ms: float, rows, top: int = 12) -> str:
    lines = [f"{name}: {total_ms:.3f} ms per run in kernels (sum of per-node medians)",
             f"  {'operator':<32} {'ms/run':>7} {'share':>6} {'nodes':>5}"]
    for op, ms, share, n in rows[:top]:
        lines.append(f"  {op:<32} {ms:>7.3f} {100 * share:>5.1f}% {n:>5}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="edge-fp32", help="FP32 model: shipped name or path")
    ap.add_argument("--data", default="datasets/cloud-robotics-synth-bench", help="set whose test split is scored")
    ap.add_argument("--split", default="test")
    ap.add_argument("--frames", type=int, default=None, help="test frames scored for mIoU (default: all)")
    ap.add_argument("--calib-data", default=None,
                    help="calibration set, its train split (default: the first of " + ", ".join(CALIB_DATA) + " that exists)")
    ap.add_argument("--calib-frames", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", nargs="*", help="recipe names (default: all); see --list")
    ap.add_argument("--reps", type=int, default=400, help="timed runs of each session per recipe")
    ap.add_argument("--time-frames", type=int, default=8, help="distinct test frames cycled through when timing")
    ap.add_argument("--profile", action="store_true", help="also profile FP32 and each INT8 recipe per operator")
    ap.add_argument("--profile-runs", type=int, default=400)
    ap.add_argument("--save-dir", help="keep the quantised models here (default: a temporary directory)")
    ap.add_argument("--json", dest="json_out", help="write results (and the environment) as JSON")
    ap.add_argument("--list", action="store_true", help="list the recipes and exit")
    a = ap.parse_args(argv)

    if a.list:
        for r in RECIPES.values():
            print(f"{r.name:<34} keep_fp32={'+'.join(r.keep_fp32) or '-'} {r.quant_format} "
                  f"{'per-channel' if r.per_channel else 'per-tensor'} act={r.activation_type} opt={r.opt_level}"
                  + (f" config={dict(r.config)}" if r.config else "") + (f"  ({r.note})" if r.note else ""))
        return 0
    names = a.recipes or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; --list shows them")

    from cepr.edge.export import quantize_int8, read_meta
    from cepr.edge.models import model_path

    if a.calib_data is None:
        a.calib_data = next((d for d in CALIB_DATA if Path(d).is_dir()), CALIB_DATA[0])
    fp32 = model_path(a.model)
    cfg = read_meta(fp32)["model_config"]
    from cepr.bench.machine import format_machine, machine_info

    m = machine_info()
    env = {**m, "onnxruntime": ort.__version__, "numpy": np.__version__, "model": str(fp32), "data": a.data,
           "calib_data": a.calib_data, "reps": a.reps}
    print("machine: " + format_machine(m))
    print(f"model {fp32.name}; scoring {a.data} {a.split}; calibration {a.calib_data} train, "
          f"{a.calib_frames} frames, seed {a.seed}", flush=True)

    feeds, labels = load_frames(a.data, a.split, a.frames, cfg)
    time_feeds = feeds[: max(1, a.time_frames)]
    s32 = session(fp32)
    fp32_miou = miou(s32, feeds, labels)
    print(f"FP32 mIoU on {len(feeds)} frames: {100 * fp32_miou:.2f}%", flush=True)

    tmp = None
    if a.save_dir:
        out_dir = Path(a.save_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        out_dir = Path(tmp.name)
    built: dict = {}
    results: list[Result] = []
    profiles: dict = {}
    if a.profile:
        kinds = conv_kinds(fp32)
        total, rows = op_profile(session(fp32, profile_prefix=out_dir / "prof-fp32"), time_feeds, a.profile_runs,
                                 kinds)
        profiles["fp32"] = {"total_ms": total, "ops": rows, "amdahl": amdahl(rows)}
        print(format_profile("FP32", total, rows, top=20), flush=True)
        b = profiles["fp32"]["amdahl"]
        print(f"  3x3 convolutions past the stems: {100 * b['share_3x3']:.1f}% of FP32 kernel time; whole-network "
              f"FP32/INT8 if only they ran 2x / 3x / 4x / infinitely faster: "
              + " / ".join(f"{b[k]:.2f}x" for k in ("2x", "3x", "4x", "infx")), flush=True)
    try:
        for name in names:
            rec = RECIPES[name]
            key = rec.quant_key()
            t0 = time.perf_counter()
            if key not in built:
                path = out_dir / (name.replace("/", "_").replace(":", "-").replace("+", "_") + ".onnx")
                quantize_int8(fp32, path, a.calib_data, frames=a.calib_frames, seed=a.seed, **rec.quant_kwargs())
                built[key] = path
            qs = time.perf_counter() - t0
            path = built[key]
            s8 = session(path, rec.opt_level, rec.config)
            q_miou = miou(s8, feeds, labels)
            t8, t32 = interleaved_times([s8, s32], time_feeds, a.reps)
            i8_ms, f32_ms = float(np.median(t8)), float(np.median(t32))
            i8_p10, f32_p10 = float(np.percentile(t8, 10)), float(np.percentile(t32, 10))
            res = Result(asdict(rec), i8_ms, f32_ms, f32_ms / i8_ms, q_miou, fp32_miou,
                         100 * (q_miou - fp32_miou), path.stat().st_size / 1e6, qs,
                         int8_p10_ms=i8_p10, fp32_p10_ms=f32_p10, ratio_p10=f32_p10 / i8_p10,
                         load=os.getloadavg()[0])
            if a.profile:
                total, rows = op_profile(session(path, rec.opt_level, rec.config,
                                                 profile_prefix=out_dir / "prof-int8"), time_feeds, a.profile_runs,
                                         kinds)
                res.profile = {"total_ms": total, "ops": rows}
                print(format_profile(f"INT8 {name}", total, rows, top=20), flush=True)
            results.append(res)
            print(f"{name:<34} int8 {i8_ms:.3f} ms  fp32 {f32_ms:.3f} ms  {res.ratio:.2f}x (p10 {res.ratio_p10:.2f}x)  "
                  f"mIoU {100 * q_miou:.2f}% ({res.drop_points:+.2f})", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    print()
    print(format_table(results))
    print(f"\nratio = FP32 ms / INT8 ms, medians of {a.reps} interleaved one-thread runs each (p10 ratio: of the "
          f"10th percentiles, the least disturbed runs); FP32 at ORT_ENABLE_ALL; drop = INT8 - FP32 mIoU in points on "
          f"{len(feeds)} {a.split} frames; load = 1-minute load average after timing ({os.cpu_count()} CPUs)")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"env": env, "fp32_miou": fp32_miou, "profiles": profiles,
                                                "results": [asdict(r) for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
