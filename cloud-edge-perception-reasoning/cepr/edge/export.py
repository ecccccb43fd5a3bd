"""Checkpoint -> ONNX FP32 -> static INT8 (ONNX Runtime QDQ), with the model's recipe stored in the ONNX file.

Static quantisation (activation ranges calibrated on training frames) is used because dynamic INT8 makes
convolutions slower on CPUs like ours. The FP32 graph is exported with its weights inside the file and its
``value_info`` cleared, which the quantiser's shape inference needs.

Every exported model has a second output, ``features``: the encoder's 1/32-resolution map (the tensor the
pyramid context pools), so one pass gives the grounded VLM its vision tokens beside the mask
(:func:`add_features_output`). Declaring it changes no logit: the tensor is computed anyway.
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.edge.preprocess import prepare_depth, prepare_rgb
from cepr.errors import CeprError

log = logging.getLogger(__name__)
META_KEY = "cepr"


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CeprError(f"this step needs {module}: pip install -e '.[{extra}]'") from e


def load_checkpoint(path: str | Path):
    torch = _require("torch", "train")
    from cepr.edge.rfnet import RFNet, RFNetConfig  # torch

    p = Path(path)
    if not p.is_file():
        raise CeprError(f"checkpoint {p} not found")
    ck = torch.load(p, map_location="cpu", weights_only=True)
    cfg = RFNetConfig.from_dict(ck["model_config"])
    if "input_size" in ck:  # a model trained on crops runs on whole frames of its input size
        cfg = RFNetConfig.from_dict({**cfg.to_dict(), "input_size": ck["input_size"]})
    model = RFNet(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck


def save_weights(checkpoint: str | Path, out: str | Path) -> Path:
    """The checkpoint without optimizer state: what ships as the PyTorch form of a model."""
    torch = _require("torch", "train")
    ck = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    keep = {k: ck[k] for k in ("model", "model_config", "input_size", "train_config", "step", "best_miou") if k in ck}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(keep, out)
    return Path(out)


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17, extra_meta: dict | None = None) -> Path:
    torch = _require("torch", "train")
    onnx = _require("onnx", "train")
    model, ck = load_checkpoint(checkpoint)
    cfg = model.cfg
    w, h = cfg.input_size
    args = (torch.zeros(1, 3, h, w),) + ((torch.zeros(1, 1, h, w),) if cfg.use_depth else ())
    names = ["rgb"] + (["depth"] if cfg.use_depth else [])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact for this static graph
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, args, str(out), input_names=names, output_names=["logits"], opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    m = onnx.load(str(out))
    del m.graph.value_info[:]
    meta = {"model_config": cfg.to_dict(), "train_config": ck.get("train_config", {}), "step": ck.get("step"),
            "best_val_miou": ck.get("best_miou"), "precision": "fp32", "source": str(checkpoint)}
    meta.update(extra_meta or {})
    _set_meta(m, meta)
    _declare_features(m)
    onnx.save(m, str(out))
    return out


FEATURES = "features"  # the encoder output's name
_FEATURES_SOURCE = "/context/GlobalAveragePool"  # the pyramid context's global pool reads the encoder's 1/32 map


def _declare_features(m) -> None:
    """Add the ``features`` output to an RFNet graph (FP32 or quantised) in place, once."""
    import onnx
    from onnx import helper

    if any(o.name == FEATURES for o in m.graph.output):
        return
    # QDQ and FP32 graphs keep the float pool; a QOperator graph has a QLinearGlobalAveragePool of the same name
    # stem reading the quantised map, which is dequantised with its own scale and zero point
    pools = [n for n in m.graph.node if n.name == _FEATURES_SOURCE or (
        n.name.startswith(_FEATURES_SOURCE) and n.op_type == "QLinearGlobalAveragePool")]
    if len(pools) != 1:
        raise CeprError(f"no node {_FEATURES_SOURCE} in this graph: not an RFNet exported by cepr")
    pool = pools[0]
    if pool.op_type == "QLinearGlobalAveragePool":
        node = helper.make_node("DequantizeLinear", list(pool.input[:3]), [FEATURES], name="encoder_features")
    else:
        node = helper.make_node("Identity", [pool.input[0]], [FEATURES], name="encoder_features")
    m.graph.node.append(node)
    m.graph.output.append(helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, None))


def _drop_features(m) -> None:
    for o in [o for o in m.graph.output if o.name == FEATURES]:
        m.graph.output.remove(o)
    for n in [n for n in m.graph.node if FEATURES in n.output]:
        m.graph.node.remove(n)


def add_features_output(path: str | Path, out: str | Path | None = None) -> Path:
    """Write ``path`` (an RFNet ONNX model, FP32 or INT8) with the ``features`` output declared, to ``out``
    (default: in place). Its logits stay bit for bit what they were."""
    onnx = _require("onnx", "train")
    m = onnx.load(str(path))
    _declare_features(m)
    out = Path(out or path)
    onnx.save(m, str(out))
    return out


def _set_meta(m, meta: dict) -> None:
    for p in list(m.metadata_props):
        if p.key == META_KEY:
            m.metadata_props.remove(p)
    entry = m.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps(meta)


def read_meta(path: str | Path) -> dict:
    """The cepr recipe stored in an ONNX file (through onnxruntime, so no onnx package is needed)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = sess.get_modelmeta().custom_metadata_map.get(META_KEY)
    if raw is None:
        raise CeprError(f"{path} carries no cepr metadata: export it with `cepr edge export`")
    return json.loads(raw)


class _Calibration:
    """Feeds preprocessed training frames to the ONNX Runtime calibrator."""

    def __init__(self, frames, cfg: dict):
        size = tuple(cfg["input_size"])
        self.items = []
        for s in frames:
            feed = {"rgb": prepare_rgb(s.rgb, size)[None]}
            if cfg["use_depth"]:
                feed["depth"] = prepare_depth(s.depth, size)[None]
            self.items.append(feed)
        self.it = iter(self.items)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.items)


KEEP_FP32 = {
    # the two encoder stems (3 -> w and 1 -> w channels at half resolution): INT8 costs them accuracy (raw
    # colour and depth ranges; measured -7 mIoU points with them quantised, -0.7 without) and speed (im2col
    # over 27 or 9 inputs per output is a poor fit for the INT8 GEMM)
    "stem": lambda n: n.name.startswith("/stem"),
    # squeeze-excitation gates: tiny 1x1 convolutions on 1x1 maps, a sigmoid and a broadcast multiply; in INT8
    # each carries more requantisation overhead than arithmetic (measured: the whole model got slower, on the first
    # machine, without VNNI; on the avx512_vnni machine the model is faster with them quantised: docs/edge.md)
    "attention": lambda n: n.op_type in ("Mul", "Sigmoid", "GlobalAveragePool")
    or (n.op_type == "Conv" and ("/fc1/" in n.name or "/fc2/" in n.name)),
    # the 30-class head: keeps the logits, and so the argmax and the planner's probabilities, exact
    "head": lambda n: n.op_type == "Conv" and n.name.startswith("/head"),
    # finer parts of "attention", for recipes measured by benchmarks/quant_recipe.py: the gates' small ops
    # (pooling, the two 1x1 convolutions, the sigmoid) and the broadcast multiply that applies a gate
    "gate": lambda n: n.op_type in ("Sigmoid", "GlobalAveragePool")
    or (n.op_type == "Conv" and ("/fc1/" in n.name or "/fc2/" in n.name)),
    "scale": lambda n: n.op_type == "Mul",
    # the first fusion (gates, multiplies and the sum, at the stems' half resolution): its broadcast multiplies
    # are the costliest in INT8
    "fuse0": lambda n: n.name.startswith("/fuse.0/"),
}


QUANT_FORMATS = ("qdq", "qoperator")  # QuantizeLinear/DequantizeLinear pairs ORT fuses, or QLinear* operators
ACTIVATION_TYPES = ("u8", "s8")  # activations (and so Q/DQ tensors) as uint8 or int8; weights are always int8


def quantize_int8(fp32: str | Path, out: str | Path, data: str, frames: int = 64, seed: int = 0,
                  method: str = "minmax", keep_fp32: tuple[str, ...] = ("stem",),
                  quant_format: str = "qdq", activation_type: str = "u8", per_channel: bool = True) -> Path:
    """Static INT8 calibrated on ``frames`` training frames of ``data``; int8 weights.

    ``keep_fp32`` names groups of nodes left in floating point (see ``KEEP_FP32``); ``quant_format`` is
    ``qdq`` or ``qoperator``; ``activation_type`` ``u8`` or ``s8``; ``per_channel`` quantises weights per
    output channel (else per tensor). The recipe is recorded under ``calibration`` in the file's metadata."""
    _require("onnx", "train")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process


    meta = read_meta(fp32)
    cfg = meta["model_config"]
    ds = CloudRoboticsDataset(find_index(data, split="train"))
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), min(frames, len(ds)), replace=False))
    calib = _Calibration((ds[int(i)] for i in idx), cfg)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pre = out.with_suffix(".pre.onnx")
    import onnx

    plain = onnx.load(str(fp32))
    _drop_features(plain)  # quantised as the logits alone, then declared again on the quantised graph
    plain_path = out.with_suffix(".plain.onnx")
    onnx.save(plain, str(plain_path))
    quant_pre_process(str(plain_path), str(pre), skip_symbolic_shape=True)
    plain_path.unlink(missing_ok=True)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise CeprError(f"unknown calibration method {method!r}; choose from {sorted(methods)}")
    if quant_format not in QUANT_FORMATS:
        raise CeprError(f"unknown quant format {quant_format!r}; choose from {list(QUANT_FORMATS)}")
    if activation_type not in ACTIVATION_TYPES:
        raise CeprError(f"unknown activation type {activation_type!r}; choose from {list(ACTIVATION_TYPES)}")
    unknown = set(keep_fp32) - set(KEEP_FP32)
    if unknown:
        raise CeprError(f"unknown --keep-fp32 group(s) {sorted(unknown)}; choose from {sorted(KEEP_FP32)}")
    graph = onnx.load(str(pre)).graph
    exclude = [n.name for n in graph.node if any(KEEP_FP32[g](n) for g in keep_fp32)]
    fmt = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[quant_format]
    act = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[activation_type]
    quantize_static(str(pre), str(out), calib, quant_format=fmt, per_channel=bool(per_channel),
                    activation_type=act, weight_type=QuantType.QInt8,
                    calibrate_method=methods[method], nodes_to_exclude=exclude)
    pre.unlink(missing_ok=True)
    m = onnx.load(str(out))
    _set_meta(m, {**meta, "precision": "int8", "calibration": {"frames": len(idx), "seed": seed, "method": method,
                                                              "data": str(data), "keep_fp32": list(keep_fp32),
                                                              "quant_format": quant_format,
                                                              "activation_type": activation_type,
                                                              "weight_type": "s8", "per_channel": bool(per_channel)}})
    _declare_features(m)
    onnx.save(m, str(out))
    return out
