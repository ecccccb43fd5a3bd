"""LoRA for the Hugging Face causal language models here (Llama, Gemma 3): built, trained, saved and merged with
PEFT, exported for llama.cpp by our own code.

A LoRA layer adds a low-rank update to a frozen linear layer: ``y = W x + (alpha / r) * B (A x)`` with ``A`` of
shape (r, in), initialised like a linear layer, and ``B`` of shape (out, r), initialised to zero, so training
starts from the base model exactly. ``inject`` wraps the chosen projections of the decoder layers with PEFT's
LoRA layers (``peft.get_peft_model``); ``merge`` folds the update into the weights (PEFT's
``merge_and_unload``: what a model without LoRA support then computes).

Two on-disk forms:

- **PEFT folder** (``save_peft``, PEFT's ``save_pretrained``): ``adapter_config.json`` and
  ``adapter_model.safetensors`` with PEFT's names (``base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight``),
  which vLLM's LoRA loader and PEFT itself read.
- **GGUF LoRA adapter** (``save_gguf``) for llama.cpp (``Llama(lora_path=...)``): ``general.type = adapter``,
  ``adapter.type = lora``, ``adapter.lora.alpha``, ``general.architecture`` of the base model, tensors
  ``blk.N.<name>.weight.lora_a`` (numpy shape (r, in)) and ``.lora_b`` ((out, r)), F32. For the ``llama``
  architecture the base GGUF's q/k rows are permuted to llama.cpp's adjacent-pair RoPE layout
  (``cepr.llm.gguf_export``), so ``B`` of q and k (whose rows are the projection's output rows) gets the same
  permutation; ``A`` is untouched. Gemma 3's GGUF keeps Hugging Face's row order (llama.cpp runs it with NeoX-style
  RoPE, which rotates the same (i, i + head_dim/2) pairs as Hugging Face), so nothing is permuted there. PEFT has
  no GGUF export, so this part is ours.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cepr.errors import CeprError
from cepr.llm.gguf_export import permute_rope_rows

# projection name in a decoder layer (Llama and Gemma 3 alike) -> llama.cpp's tensor name
TARGETS = {
    "q_proj": ("self_attn", "attn_q"), "k_proj": ("self_attn", "attn_k"), "v_proj": ("self_attn", "attn_v"),
    "o_proj": ("self_attn", "attn_output"), "gate_proj": ("mlp", "ffn_gate"), "up_proj": ("mlp", "ffn_up"),
    "down_proj": ("mlp", "ffn_down"),
}
# Hugging Face model_type -> (GGUF architecture, whether q/k rows are permuted for RoPE in our GGUF)
ARCHS = {"llama": ("llama", True), "gemma3_text": ("gemma3", False), "gemma3": ("gemma3", False)}
# adapters shipped in cepr/assets/models by name: (file, the base model they were trained for)
# gemma3-270m-cepr: cepr llm finetune on the synthetic set's train split, 25 min on 2 shared cores (docs/llm.md)
SHIPPED_LORAS: dict[str, tuple[str, str]] = {"gemma3-270m-cepr": ("gemma3-270m-cepr-lora.gguf", "gemma3-270m")}
_PEFT_KEY = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight")


@dataclass(frozen=True)
class LoraSpec:
    r: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = tuple(TARGETS)
    dropout: float = 0.0
    layers: tuple[int, ...] | None = None  # decoder layers that get LoRA (None: all)

    def __post_init__(self):
        bad = [t for t in self.targets if t not in TARGETS]
        if bad:
            raise CeprError(f"LoRA target(s) {', '.join(bad)} unknown: choose from {', '.join(TARGETS)}")
        if self.r < 1:
            raise CeprError(f"LoRA rank must be >= 1, got {self.r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


def decoder_layers(model):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise CeprError(f"{type(model).__name__}: no model.layers (LoRA here covers Llama and Gemma 3 causal LMs)")
    return layers


def peft_config(spec: LoraSpec):
    """PEFT's ``LoraConfig`` for ``spec`` (plain LoRA: no bias, no rsLoRA or DoRA)."""
    from peft import LoraConfig  # torch

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, target_modules=list(spec.targets), lora_dropout=spec.dropout,
                      bias="none", task_type="CAUSAL_LM", use_rslora=False, use_dora=False,
                      layers_to_transform=list(spec.layers) if spec.layers is not None else None)


def inject(model, spec: LoraSpec):
    """``model`` frozen, with LoRA on the target projections of the chosen layers (in place: ``model`` itself
    now computes with them). Returns PEFT's model around it, whose trainable parameters are exactly the LoRA
    matrices, and which saves and loads the adapter."""
    from peft import PeftModel, get_peft_model  # torch

    if isinstance(model, PeftModel) or any(type(m).__module__.startswith("peft.") for m in model.modules()):
        raise CeprError("LoRA is already injected into this model")
    n = len(decoder_layers(model))
    bad = [i for i in spec.layers or () if not 0 <= i < n]
    if bad:
        raise CeprError(f"LoRA layers {bad} do not exist: the model has {n} decoder layers")
    return get_peft_model(model, peft_config(spec))


def trainable(peft_model) -> list:
    """The LoRA matrices (what the optimizer updates)."""
    return [p for p in peft_model.parameters() if p.requires_grad]


def lora_state(peft_model) -> dict:
    """PEFT-named tensors: {base_model.model.<path>.lora_A.weight: tensor, ...} (copies)."""
    from peft import get_peft_model_state_dict  # torch

    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}


def load_lora_state(peft_model, sd: dict) -> None:
    """Set the LoRA matrices from PEFT-named tensors; tensors that do not match the model are an error."""
    from peft import set_peft_model_state_dict  # torch

    want = set(lora_state(peft_model))
    if set(sd) != want:
        missing, extra = sorted(want - set(sd)), sorted(set(sd) - want)
        raise CeprError(f"LoRA tensors do not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    set_peft_model_state_dict(peft_model, sd)


def merge(peft_model):
    """The base model with every LoRA update folded into its weights (PEFT's ``merge_and_unload``)."""
    return peft_model.merge_and_unload()


def load_merged(model, folder: str | Path):
    """``model`` with the PEFT folder's adapter merged in."""
    from peft import PeftModel  # torch

    read_peft(folder)  # a folder that is not a plain LoRA adapter is named before PEFT reads it
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def save_peft(peft_model, out: str | Path, base_model: str = "") -> Path:
    """The adapter as a PEFT folder (PEFT's ``save_pretrained``: adapter_config.json, adapter_model.safetensors),
    naming ``base_model`` as its base."""
    out = Path(out)
    peft_model.save_pretrained(str(out))
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_model
    cfg_path.write_text(json.dumps(cfg, indent=1) + "\n")
    return out


def read_peft(folder: str | Path) -> tuple[LoraSpec, dict]:
    """(spec, PEFT-named tensors as numpy) from a PEFT folder written by ``save_peft``."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    cfg_path, w_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CeprError(f"{folder}: not a PEFT LoRA folder ({p.name} missing)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type") != "LORA" or cfg.get("use_dora") or cfg.get("use_rslora"):
        raise CeprError(f"{cfg_path}: only plain LoRA adapters are supported")
    layers = cfg.get("layers_to_transform")
    spec = LoraSpec(r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]), targets=tuple(cfg["target_modules"]),
                    layers=tuple(layers) if layers is not None else None)
    return spec, load_file(str(w_path))


def save_gguf(tensors: dict, spec: LoraSpec, config, out: str | Path, name: str = "cepr-lora") -> Path:
    """A GGUF LoRA adapter for llama.cpp from PEFT-named tensors (numpy or torch) and the base model's HF config."""
    import gguf


    model_type = getattr(config, "model_type", None) or config.get("model_type")
    get = (lambda k: getattr(config, k)) if not isinstance(config, dict) else config.__getitem__
    if model_type not in ARCHS:
        raise CeprError(f"GGUF LoRA export covers {', '.join(ARCHS)} models, not {model_type!r}")
    arch, permuted = ARCHS[model_type]
    heads = {"q_proj": get("num_attention_heads"), "k_proj": get("num_key_value_heads")}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(spec.alpha))
    w.add_name(name)

    def key(t):  # layer index, then llama.cpp's tensor order within a layer, A before B
        m = _PEFT_KEY.fullmatch(t)
        if not m:
            raise CeprError(f"LoRA tensor {t!r} has no GGUF name (expected PEFT names of decoder projections)")
        return int(m.group(1)), list(TARGETS).index(m.group(3)) if m.group(3) in TARGETS else 99, m.group(4)

    for t in sorted(tensors, key=key):
        layer, block, proj, ab = _PEFT_KEY.fullmatch(t).groups()
        if proj not in TARGETS or TARGETS[proj][0] != block:
            raise CeprError(f"LoRA tensor {t!r}: {block}.{proj} is not a supported projection")
        v = tensors[t]
        v = (v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)).astype(np.float32)
        if ab == "B" and permuted and proj in heads:
            v = permute_rope_rows(v, heads[proj])
        w.add_tensor(f"blk.{layer}.{TARGETS[proj][1]}.weight.lora_{ab.lower()}", np.ascontiguousarray(v))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def adapter_info(path: str | Path) -> dict:
    """{architecture, alpha, tensors} of a GGUF LoRA adapter; a file that is not one is an error naming it."""
    import gguf

    try:
        r = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - the gguf reader raises several types for a bad file
        raise CeprError(f"LoRA adapter {path}: not a readable GGUF file ({e})") from None

    def val(k):
        f = r.fields.get(k)
        return None if f is None else f.contents()

    if val("general.type") != "adapter" or val("adapter.type") != "lora":
        raise CeprError(f"LoRA adapter {path}: a GGUF file but not a LoRA adapter (general.type "
                        f"{val('general.type')!r}, adapter.type {val('adapter.type')!r})")
    return {"architecture": val("general.architecture"), "alpha": val("adapter.lora.alpha"),
            "tensors": len(r.tensors)}


def adapter_path(name_or_path: str | Path) -> Path:
    """A GGUF LoRA adapter: a shipped adapter's name (``SHIPPED_LORAS``) or a path to one."""
    name = str(name_or_path)
    if name in SHIPPED_LORAS:
        p = Path(__file__).resolve().parent.parent / "assets" / "models" / SHIPPED_LORAS[name][0]
        if not p.is_file():
            raise CeprError(f"shipped LoRA adapter {name!r}: {p} is missing from this install")
        return p
    p = Path(name).expanduser()
    if not p.is_file():
        known = f" (shipped: {', '.join(SHIPPED_LORAS)})" if SHIPPED_LORAS else " (none is shipped)"
        raise CeprError(f"LoRA adapter {name!r} not found: neither a GGUF file nor a shipped adapter's name{known}")
    adapter_info(p)
    return p


def gguf_string(path: str | Path, key: str) -> str | None:
    """One string field of a GGUF file's header (None when absent), read by walking the key/value pairs up to it.
    ``gguf.GGUFReader`` parses every field first, which for a model with a 262k-token vocabulary (Gemma 3) takes
    about 10 s; ``general.architecture`` comes first, so this reads a few hundred bytes."""
    import struct

    scalar = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> bytes
    with open(path, "rb") as f:
        def read(fmt):
            size = struct.calcsize("<" + fmt)
            data = f.read(size)
            if len(data) < size:
                raise CeprError(f"{path}: a GGUF header that ends early")
            return struct.unpack("<" + fmt, data)

        def string() -> bytes:
            (n,) = read("Q")
            return f.read(n)

        def skip(vtype: int) -> None:
            if vtype in scalar:
                f.seek(scalar[vtype], 1)
            elif vtype == 8:
                string()
            elif vtype == 9:
                etype, count = read("IQ")
                if etype in scalar:
                    f.seek(scalar[etype] * count, 1)
                else:
                    for _ in range(count):
                        skip(etype)
            else:
                raise CeprError(f"{path}: unknown GGUF value type {vtype}")

        if f.read(4) != b"GGUF":
            raise CeprError(f"{path}: not a GGUF file")
        _version, _tensors, n_kv = read("IQQ")
        for _ in range(n_kv):
            name = string().decode("utf-8", "replace")
            (vtype,) = read("I")
            if name == key:
                return string().decode("utf-8", "replace") if vtype == 8 else None
            skip(vtype)
    return None


def check_adapter_fits(adapter: Path, model_gguf: Path) -> None:
    """The adapter's architecture is the model's (llama.cpp refuses a mismatch with a bare "failed to load")."""
    arch = adapter_info(adapter)["architecture"]
    base = gguf_string(model_gguf, "general.architecture")
    if arch != base:
        raise CeprError(f"LoRA adapter {adapter} is for a {arch} model, {model_gguf.name} is a {base} model")
