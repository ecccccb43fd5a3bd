"""RFNet-style RGB-D segmentation network (after Sun et al., 2020, "Real-time Fusion Network for RGB-D
Semantic Segmentation Incorporating Unexpected Obstacle Detection for Road-driving Images").

Two ResNet-style encoders (RGB and depth); at every stage the depth features are fused into the RGB stream
through channel attention on both (the paper's attention feature complementary module); a light spatial
pyramid gives context at 1/32; a SwiftNet-style decoder upsamples with 1x1 skip connections to 1/4, where a
1x1 head predicts the 30 classes. ``use_depth=False`` drops the depth encoder (the real Cloud-Robotics set
has no depth, and the cloud expert only ever receives an image).

This module needs torch; runtime inference uses the exported ONNX model and never imports it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cepr.data.classes import NUM_CLASSES
from cepr.edge.preprocess import prepare_depth, prepare_rgb


@dataclass(frozen=True)
class RFNetConfig:
    width: int = 16  # channels of the first stage; stages use width * (1, 2, 4, 8)
    blocks: tuple[int, ...] = (1, 1, 1, 1)  # basic blocks per stage
    use_depth: bool = True
    num_classes: int = NUM_CLASSES
    input_size: tuple[int, int] = (320, 240)  # (width, height) the frames are resized to
    decoder_width: int = 0  # 0: 2 * width

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RFNetConfig:
        d = dict(d)
        d["blocks"] = tuple(d.get("blocks", (1, 1, 1, 1)))
        d["input_size"] = tuple(d.get("input_size", (320, 240)))
        return cls(**d)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, relu=False)
        self.short = None if (stride == 1 and cin == cout) else conv_bn(cin, cout, 1, stride, relu=False)

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return F.relu(y + (x if self.short is None else self.short(x)))


class Encoder(nn.Module):
    """Stem at 1/2, then four stages at 1/4, 1/8, 1/16, 1/32."""

    def __init__(self, cin: int, width: int, blocks):
        super().__init__()
        self.stem = conv_bn(cin, width, 3, 2)
        chans = [width * m for m in (1, 2, 4, 8)]
        stages, prev = [], width
        for c, n in zip(chans, blocks):
            stages.append(nn.Sequential(BasicBlock(prev, c, 2), *[BasicBlock(c, c) for _ in range(n - 1)]))
            prev = c
        self.stages = nn.ModuleList(stages)
        self.channels = chans


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: a per-channel gate from globally pooled features."""

    def __init__(self, c: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, c // reduction)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        w = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(w))))


class AttentionFusion(nn.Module):
    """RFNet's complementary fusion: rgb' = CA(rgb) + CA(depth)."""

    def __init__(self, c: int):
        super().__init__()
        self.rgb = ChannelAttention(c)
        self.depth = ChannelAttention(c)

    def forward(self, rgb, depth):
        return self.rgb(rgb) + self.depth(depth)


class PyramidContext(nn.Module):
    """Light spatial pyramid: global, 1/2 and 1/4 average pools of the 1/32 map, projected and summed in."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(8, cin // 4)
        self.branches = nn.ModuleList(conv_bn(cin, mid, 1) for _ in range(3))
        self.project = conv_bn(cin + 3 * mid, cout, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        feats = [x]
        pooled = [F.adaptive_avg_pool2d(x, 1), F.avg_pool2d(x, 2, 2, ceil_mode=True),
                  F.avg_pool2d(x, 4, 4, ceil_mode=True)]
        for branch, p in zip(self.branches, pooled):
            feats.append(F.interpolate(branch(p), size=(h, w), mode="bilinear", align_corners=False))
        return self.project(torch.cat(feats, 1))


class UpBlock(nn.Module):
    """Upsample the coarser map to the skip's size, add the 1x1-projected skip, blend with a 3x3 conv."""

    def __init__(self, skip_c: int, c: int):
        super().__init__()
        self.skip = conv_bn(skip_c, c, 1)
        self.blend = conv_bn(c, c, 3)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.blend(x + self.skip(skip))


class RFNet(nn.Module):
    """Input: rgb (N,3,H,W) normalised, and depth (N,1,H,W) when ``use_depth``. Output: logits at 1/4."""

    def __init__(self, cfg: RFNetConfig = RFNetConfig()):
        super().__init__()
        self.cfg = cfg
        self.rgb = Encoder(3, cfg.width, cfg.blocks)
        chans = self.rgb.channels
        self.depth = Encoder(1, cfg.width, cfg.blocks) if cfg.use_depth else None
        self.fuse = nn.ModuleList(AttentionFusion(c) for c in [cfg.width] + chans) if cfg.use_depth else None
        dw = cfg.decoder_width or 2 * cfg.width
        self.context = PyramidContext(chans[3], dw)
        self.up = nn.ModuleList([UpBlock(chans[2], dw), UpBlock(chans[1], dw), UpBlock(chans[0], dw)])
        self.head = nn.Conv2d(dw, cfg.num_classes, 1)

    def forward(self, rgb, depth=None):
        x = self.rgb.stem(rgb)
        if self.depth is not None:
            if depth is None:
                raise ValueError("this RFNet was built with use_depth=True: pass a depth tensor")
            d = self.depth.stem(depth)
            x = self.fuse[0](x, d)
        skips = []
        for i, stage in enumerate(self.rgb.stages):
            x = stage(x)
            if self.depth is not None:
                d = self.depth.stages[i](d)
                x = self.fuse[i + 1](x, d)
            skips.append(x)
        y = self.context(skips[3])
        for up, skip in zip(self.up, (skips[2], skips[1], skips[0])):
            y = up(y, skip)
        return self.head(y)


def predict_logits(model: RFNet, rgb, depth, input_size: tuple[int, int]):
    """(C, h, w) numpy logits for one uint8 RGB frame (and depth in metres), prepared as for ONNX inference.

    ``input_size`` is explicit because a model trained on crops runs on whole frames of another size."""
    dev = next(model.parameters()).device
    with torch.inference_mode():
        x = torch.from_numpy(prepare_rgb(rgb, input_size)[None]).to(dev)
        d = torch.from_numpy(prepare_depth(depth, input_size)[None]).to(dev) if model.cfg.use_depth else None
        return model(x, d)[0].float().cpu().numpy()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
