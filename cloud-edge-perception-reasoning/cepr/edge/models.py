"""The models shipped inside the package (built by the commands in docs/edge.md, never downloaded)."""

from __future__ import annotations

import difflib
from pathlib import Path

from cepr.errors import CeprError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models"
SHIPPED = {
    "edge-int8": "edge-rfnet-w16-int8.onnx",  # the edge model: RGB-D, 320x240 input, static INT8
    "edge-fp32": "edge-rfnet-w16-fp32.onnx",  # the same model before quantisation
    "edge-torch": "edge-rfnet-w16.pt",  # its PyTorch weights (for `cepr bench edge` and fine-tuning)
    "edge-calibration": "edge-rfnet-w16-int8.calibration.json",  # the local planner's fitted confidence
    "cloud": "cloud-rfnet-w32-rgb-fp32.onnx",  # the cloud reference model: RGB only, 640x480, FP32
}


def model_path(name_or_path: str | Path) -> Path:
    """A shipped model's name (see ``SHIPPED``) or a file path -> an existing file."""
    s = str(name_or_path)
    if s in SHIPPED:
        p = ASSETS / SHIPPED[s]
        if not p.is_file():
            raise CeprError(f"shipped model {s!r} ({p.name}) is missing from {ASSETS}; rebuild it with the commands "
                            "in docs/edge.md")
        return p
    p = Path(s)
    if p.is_file():
        return p
    hint = difflib.get_close_matches(s, SHIPPED, n=1)
    raise CeprError(f"no model file {s!r}" + (f"; did you mean the shipped model {hint[0]!r}?" if hint else
                                             f" (shipped models: {', '.join(SHIPPED)})"))
