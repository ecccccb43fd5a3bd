"""The models shipped inside the package (built by the commands in docs/edge.md, never downloaded), and the rule
that picks the edge model and its planner calibration from what a frame carries (``model: auto``)."""

from __future__ import annotations

from pathlib import Path

from cepr.errors import CeprError, did_you_mean
from cepr.llm.grounded import CONFIG as GROUNDED_CONFIG

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models"
SHIPPED = {
    "edge-int8": "edge-rfnet-w16-int8.onnx",  # the edge model: RGB-D, 320x240 input, static INT8
    "edge-fp32": "edge-rfnet-w16-fp32.onnx",  # the same model before quantisation
    "edge-torch": "edge-rfnet-w16.pt",  # its PyTorch weights (for `cepr bench edge` and fine-tuning)
    "edge-calibration": "edge-rfnet-w16-int8.calibration.json",  # the local planner's fitted confidence
    "edge-rgb-int8": "edge-rfnet-w16-rgb-int8.onnx",  # the same recipe without depth (for the real set), INT8
    "edge-rgb-fp32": "edge-rfnet-w16-rgb-fp32.onnx",  # ... before quantisation
    "edge-rgb-torch": "edge-rfnet-w16-rgb.pt",  # ... its PyTorch weights
    "edge-rgb-calibration": "edge-rfnet-w16-rgb-int8.calibration.json",  # ... its planner calibration
    "cloud": "cloud-rfnet-w32-rgb-fp32.onnx",  # the cloud reference model: RGB only, 640x480, FP32
}

AUTO = "auto"
EDGE_RGBD = "edge-int8"  # what ``model: auto`` runs on a frame with depth
EDGE_RGB = "edge-rgb-int8"  # ... and on a frame without depth (the real Cloud-Robotics set has none)
# the planner calibration that goes with each shipped edge model (``calibration: auto``); FP32 forms share the
# INT8 model's fit, which is what the pipeline deploys
CALIBRATION_OF = {"edge-int8": "edge-calibration", "edge-fp32": "edge-calibration",
                  "edge-rgb-int8": "edge-rgb-calibration", "edge-rgb-fp32": "edge-rgb-calibration"}
NO_CALIBRATION = (None, "", "none")


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
    hint = did_you_mean(s, SHIPPED, "the shipped model")
    raise CeprError(f"no model file {s!r}" + (hint or f" (shipped models: {', '.join(SHIPPED)})"))


def auto_model(has_depth: bool) -> str:
    """The shipped edge model ``model: auto`` runs on a frame: RGB-D where it has depth, RGB-only otherwise."""
    return EDGE_RGBD if has_depth else EDGE_RGB


def calibration_for(model: str | Path) -> Path | None:
    """The planner calibration that belongs to a model (``calibration: auto``): the shipped pairing for a shipped
    name, else ``<model>.calibration.json`` beside an ONNX file (what ``cepr edge calibrate`` writes by default);
    None when there is none (the planner then uses its uncalibrated confidence)."""
    s = str(model)
    if s in CALIBRATION_OF:
        return model_path(CALIBRATION_OF[s])
    p = Path(s)
    beside = p.with_name(p.name.removesuffix(".onnx") + ".calibration.json")
    return beside if beside.is_file() else None


def rgbd_without_depth_message(model_name: str) -> str:
    """Why an RGB-D model cannot run on a frame without depth, and what to set instead."""
    return (f"{model_name} is an RGB-D model: this frame has no depth (the real Cloud-Robotics set has none). Use "
            f"the RGB-only model {EDGE_RGB!r}: set the edge module's hyperparameter `model: {EDGE_RGB}` (or "
            f"`model: {AUTO}`, which picks it for frames without depth; the repository's jobs read it from "
            f"testalgorithms/perception-reasoning/settings/edge.yaml); with "
            f"`cepr edge eval` / `cepr edge calibrate` pass {EDGE_RGB} (or edge-rgb-fp32) as the model")


# ---- grounded VLMs ---------------------------------------------------------------------------------------------

# the grounded VLMs that ship (``cepr vlm build`` rebuilds them from the shipped encoders), by name: the encoder
# each reads. A shipped folder holds grounded.json, projector.npz, tokenizer.json and decoder-{q8_0,q4_0}.gguf.
SHIPPED_GROUNDED = {"grounded-edge": "edge-int8", "grounded-edge-rgb": "edge-rgb-int8", "grounded-cloud": "cloud"}


def grounded_assets() -> Path:
    return ASSETS / "grounded"


def grounded_path(name_or_folder: str | Path) -> Path:
    """A shipped grounded VLM's name or a ``cepr vlm train-grounded`` folder -> the folder."""
    s = str(name_or_folder)
    if s in SHIPPED_GROUNDED:
        p = grounded_assets() / s
        if not (p / GROUNDED_CONFIG).is_file():
            raise CeprError(f"shipped grounded VLM {s!r} is missing from {p.parent}; rebuild it with "
                            "`cepr vlm build` (docs/llm.md)")
        return p
    p = Path(s)
    if (p / GROUNDED_CONFIG).is_file():
        return p
    hint = did_you_mean(s, SHIPPED_GROUNDED, "the shipped grounded VLM")
    raise CeprError(f"no grounded VLM {s!r}: neither a shipped name nor a folder with {GROUNDED_CONFIG}"
                    + (hint or f" (shipped: {', '.join(SHIPPED_GROUNDED)})"))


def grounded_for_encoder(encoder: str | Path) -> str:
    """The shipped grounded VLM built on ``encoder`` (a shipped segmentation model's name or its file)."""
    name = str(encoder)
    by_file = {SHIPPED[e]: e for e in SHIPPED_GROUNDED.values() if e in SHIPPED}
    name = by_file.get(Path(name).name, name)
    for vlm, enc in SHIPPED_GROUNDED.items():
        if enc == name:
            return vlm
    raise CeprError(f"no shipped grounded VLM reads the segmentation model {encoder!s} (shipped: "
                    + ", ".join(f"{v} on {e}" for v, e in SHIPPED_GROUNDED.items())
                    + "); name one with vlm_model, or build one with `cepr vlm train-grounded`")
