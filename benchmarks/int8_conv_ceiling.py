"""How much faster can ONNX Runtime's static INT8 make a convolution on this CPU?

Builds stacks of four 3x3 convolutions at the channel counts and resolutions of the edge model, exports them,
quantises them the way `cepr edge quantize` does (QDQ, per-channel s8 weights, u8 activations) and times both
on one thread. The ratio is the ceiling for the whole model: everything else in it (attention, additions,
resizing) gains less. Needs the train extra.

    python benchmarks/int8_conv_ceiling.py
"""

import os
import platform
import tempfile
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from torch import nn


def median_ms(path, shape, runs=40):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(5):
        s.run(None, x)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, x)
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


class Calib(CalibrationDataReader):
    def __init__(self, shape):
        rng = np.random.default_rng(1)
        self.items = iter([{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.items, None)


def main():
    torch.manual_seed(0)
    cpuinfo = "/proc/cpuinfo"
    flags = ""
    if os.path.exists(cpuinfo):
        with open(cpuinfo) as f:
            flags = f.read()
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    print(f"cpu: {platform.processor() or platform.machine()}, VNNI: {'yes' if vnni else 'no'}, "
          f"onnxruntime {ort.__version__}")
    print(f"{'channels':>8} {'HxW':>8} {'fp32 ms':>8} {'int8 ms':>8} {'fp32/int8':>9}")
    with tempfile.TemporaryDirectory() as d:
        for c, h, w in [(16, 120, 160), (32, 60, 80), (64, 30, 40), (128, 15, 20)]:
            m = nn.Sequential(*[nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU()) for _ in range(4)]).eval()
            shape = (1, c, h, w)
            f32, i8 = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(m, (torch.randn(*shape),), f32, input_names=["x"], output_names=["y"],
                                  opset_version=17, dynamo=False)
                quantize_static(f32, i8, Calib(shape), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            a, b = median_ms(f32, shape), median_ms(i8, shape)
            print(f"{c:>8} {h:>4}x{w:<4}{a:>8.2f} {b:>8.2f} {a / b:>9.2f}")


if __name__ == "__main__":
    main()
