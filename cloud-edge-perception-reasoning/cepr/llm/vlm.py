"""A tiny LLaVA-style vision-language model, built offline and deterministically, and its llama.cpp conversion.

``build_tiny_vlm`` (part of ``cepr models tiny``) writes, in ``<out>/vlm/``:

* ``hf/``: a ``LlavaForConditionalGeneration``: a SigLIP-style ViT (64 px images in 16 px patches, no class
  token, hidden 64, 2 layers, FFN 96), a 2-layer MLP projector onto the decoder's hidden size, a Llama decoder
  shaped like the tiny target; with its ``LlavaProcessor`` (SigLIP image processor, PIL backend; the tiny
  tokenizer plus an ``<image>`` token, id 1024; a chat template that takes string or list-of-parts content).
  Random weights from the seed.
* ``tiny-vlm-f32.gguf`` / ``-q8_0.gguf``: the decoder, by ``cepr.llm.gguf_export`` (it reads a LLaVA folder's
  ``text_config`` and ``model.language_model.*`` weights);
* ``mmproj-f32.gguf``: the vision tower and projector in llama.cpp's ``clip`` format (``export_mmproj``), which
  llama.cpp's multimodal library (libmtmd) loads beside the decoder.

``export_mmproj`` is generic: the dimensions come from the folder's ``config.json``, so a trained LLaVA folder
(``cepr vlm train``) converts the same way. What it maps (facts of llama.cpp's clip loader):

* keys ``clip.projector_type = mlp``, ``clip.has_vision_encoder``, ``clip.vision.{image_size, patch_size,
  embedding_length, feed_forward_length, projection_dim, block_count, attention.head_count,
  attention.layer_norm_epsilon, image_mean, image_std, feature_layer}``, ``clip.use_gelu``;
* tensors ``v.patch_embd.{weight,bias}`` (the patch convolution), ``v.class_embd`` (CLIP only),
  ``v.position_embd.weight``, ``v.pre_ln.*`` (CLIP only), ``v.blk.N.{attn_q, attn_k, attn_v, attn_out, ln1, ln2,
  ffn_up, ffn_down}.*``, ``mm.0.*`` and ``mm.2.*`` (the projector's two linear layers);
* LLaVA's ``vision_feature_layer`` (``hidden_states`` index, negative from the end) becomes the non-negative
  ``clip.vision.feature_layer`` (without it llama.cpp stops one layer early, LLaVA-1.5's -2); the tower's
  ``post_layernorm`` and SigLIP's pooling head are not written (LLaVA reads hidden states before them);
* one image token per patch: SigLIP with ``vision_feature_select_strategy: full``, CLIP with ``default``.

**Why SigLIP.** With a class token, the llama.cpp in llama-cpp-python 0.3.36 appends the class embedding after
the patches yet still gathers output rows 1..n: it drops the first patch and keeps the class token, so a CLIP
tower's features come out shifted (measured: logits 0.4-1.1 apart on a scale of 10,
``benchmarks/vlm_cross_engine.py --tower clip``). A SigLIP tower has no class token, and the two engines agree
to ggml's float16 GELU table (about 3e-3 on 10). A CLIP folder still converts, for what it is worth.

Activations: llama.cpp's MLP projector and ``clip.use_gelu`` apply ``ggml_gelu`` (the tanh approximation), so
the tiny model uses ``gelu_pytorch_tanh`` in both places; a tower with ``quick_gelu`` is written without
``use_gelu`` (llama.cpp's default is quick GELU) and a projector with another activation is refused.
The vision feed-forward width must differ from the hidden size: llama.cpp swaps ``ffn_up``/``ffn_down`` of MLP
projector files whose ``ffn_down`` input width equals the hidden size (a fix for old conversions).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cepr.errors import CeprError
from cepr.llm.gguf_export import _load_weights, export_gguf
from cepr.llm.tiny import BOS, EOS, PAD, UNK, _save_hf

IMAGE_TOKEN = "<image>"
# string content, or a list of parts: text parts as they are, an image part ({"type": "image"}, Hugging Face's
# processor) as the image token. llama.cpp's multimodal chat handler hands image parts to the template as text
# parts holding its media marker, so the same template serves both engines. No bos_token: both engines' tokenizers
# add <s> themselves (libmtmd would put a second one after the template's). </s> is written out: llama-cpp-python
# renders eos_token as the empty string (it detokenizes the control token), so the turns would lose their end.
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "' }}{% endif %}{% endfor %}{% endif %}"
    "{{ '</s>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# The prompt our trained VLM (``cepr vlm train``) learned, in one place for training, the edge reasoner and the
# cloud: a user turn of the image then the question with its allowed answers; the reply is JSON that starts with
# the answer. Options are scored by their answer prefix up to the comma: the byte-level BPE merges the closing
# quote with the comma (``",``), so the prefix ends where a token boundary of the trained replies ends.
VLM_ASSISTANT_TAG = "<|assistant|>"


# Our trained VLMs shipped in the package (cepr/assets/models/vlm/), by name: (file, decoder or mmproj). Rebuilt by
# `cepr vlm train` (docs/llm.md, "Our own VLM"); the projector of a size goes by the size's bare name.
VLM_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models" / "vlm"
SHIPPED_VLMS: dict[str, tuple[str, str]] = {
    "cepr-vlm-small-q8_0": ("cepr-vlm-small-q8_0.gguf", "decoder"),
    "cepr-vlm-small-q4_0": ("cepr-vlm-small-q4_0.gguf", "decoder"),
    "cepr-vlm-small": ("cepr-vlm-small-mmproj-f32.gguf", "mmproj"),
    "cepr-vlm-base-q4_0": ("cepr-vlm-base-q4_0.gguf", "decoder"),
    "cepr-vlm-base": ("cepr-vlm-base-mmproj-f32.gguf", "mmproj"),
}


def shipped_vlm_file(name: str) -> Path:
    p = VLM_ASSETS / SHIPPED_VLMS[name][0]
    if not p.is_file():
        raise CeprError(f"shipped VLM file {name!r} is missing from the package ({p}); rebuild it with "
                        "`cepr vlm train` (docs/llm.md) or reinstall cepr")
    return p


def is_cepr_vlm(gguf_name: str | None) -> bool:
    """Whether a GGUF's ``general.name`` is one of ours from ``cepr vlm train`` (written as ``cepr-vlm-...``)."""
    return bool(gguf_name) and str(gguf_name).startswith("cepr-vlm-") and not str(gguf_name).endswith("-mmproj")


def vlm_question(prompt: str, answers) -> str:
    """The text after the image in the user turn: the task's rendered question and its allowed answers."""
    return f"{prompt} Allowed answers: {', '.join(answers)}."


def vlm_answer_prefix(option: str) -> str:
    """A reply's start up to the comma after the answer (``{"answer": "yes",``): what choice scoring compares."""
    return json.dumps({"answer": option, "reason": ""}).split(', "reason"')[0] + ","


IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)  # SigLIP's
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


@dataclass(frozen=True)
class VisionSpec:
    image_size: int = 64
    patch_size: int = 16
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int = 96  # != hidden (see the module's note on llama.cpp's ffn swap)
    eps: float = 1e-5
    feature_layer: int = -1  # LLaVA's vision_feature_layer
    tower: str = "siglip"  # or "clip" (a class token: llama.cpp computes it differently, see docs/llm.md)


VISION = VisionSpec()


def image_tokens(vision: VisionSpec = VISION) -> int:
    """Tokens one image takes in the decoder's sequence: one per patch (the class token of a CLIP tower is
    dropped, a SigLIP tower has none)."""
    return (vision.image_size // vision.patch_size) ** 2


def init_vlm_weights(model, seed: int) -> None:
    """Every parameter from a NumPy generator, in name order: norm weights 1 + N(0, 0.1^2), biases N(0, 0.02^2),
    token embeddings and the class embedding N(0, 1), the output head N(0, 9/hidden), other weights
    N(0, 1/fan_in)."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            shape = tuple(p.shape)
            leaf = name.rsplit(".", 2)[-2:]
            if ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
                v = 1.0 + 0.1 * rng.standard_normal(shape)
            elif name.endswith("bias"):
                v = 0.02 * rng.standard_normal(shape)
            elif "embed_tokens" in name or leaf[-1] == "class_embedding":
                v = rng.standard_normal(shape)
            elif name.startswith("lm_head"):
                v = rng.standard_normal(shape) * (3.0 / np.sqrt(shape[1]))
            else:
                v = rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))
            p.copy_(torch.from_numpy(v.astype(np.float32)))


def vlm_tokenizer(tok):
    """A copy of the tiny tokenizer with the image token added (the next id)."""
    from tokenizers import AddedToken, Tokenizer

    t = Tokenizer.from_str(tok.to_str())
    t.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    return t


def build_hf_vlm(tok, text_spec, vision: VisionSpec, seed: int):
    """(model, processor) for the tiny LLaVA."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil


    vocab = tok.get_vocab_size()
    image_id = tok.token_to_id(IMAGE_TOKEN)
    if vision.tower not in ("siglip", "clip"):
        raise CeprError(f"vision tower {vision.tower!r}: siglip or clip")
    clip = vision.tower == "clip"
    shape = {"hidden_size": vision.hidden, "intermediate_size": vision.ffn, "num_hidden_layers": vision.layers,
             "num_attention_heads": vision.heads, "image_size": vision.image_size,
             "patch_size": vision.patch_size, "num_channels": 3, "layer_norm_eps": vision.eps,
             "hidden_act": "gelu_pytorch_tanh"}
    vcfg = CLIPVisionConfig(**shape) if clip else SiglipVisionConfig(**shape, vision_use_head=False)
    strategy = "default" if clip else "full"  # one token per patch either way
    tcfg = LlamaConfig(vocab_size=vocab, hidden_size=text_spec.hidden, intermediate_size=text_spec.ffn,
                       num_hidden_layers=text_spec.layers, num_attention_heads=text_spec.heads,
                       num_key_value_heads=text_spec.kv_heads, head_dim=text_spec.head_dim,
                       max_position_embeddings=text_spec.max_positions, rms_norm_eps=text_spec.rms_eps,
                       rope_parameters={"rope_type": "default", "rope_theta": text_spec.rope_theta},
                       tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_index=image_id,
                      projector_hidden_act="gelu_pytorch_tanh", vision_feature_layer=vision.feature_layer,
                      vision_feature_select_strategy=strategy, image_seq_length=image_tokens(vision),
                      tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(cfg).float().eval()
    init_vlm_weights(model, seed)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                     unk_token=UNK, chat_template=VLM_CHAT_TEMPLATE,
                                     model_max_length=text_spec.max_positions,
                                     extra_special_tokens={"image_token": IMAGE_TOKEN})
    size = vision.image_size
    if clip:
        improc = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                       do_center_crop=True, resample=3, image_mean=list(IMAGE_MEAN),
                                       image_std=list(IMAGE_STD), do_convert_rgb=True)
    else:
        improc = SiglipImageProcessorPil(size={"height": size, "width": size}, do_resize=True, resample=3,
                                         image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
                                         do_convert_rgb=True)
    proc = LlavaProcessor(image_processor=improc, tokenizer=hf_tok, patch_size=vision.patch_size,
                          vision_feature_select_strategy=strategy, chat_template=VLM_CHAT_TEMPLATE,
                          image_token=IMAGE_TOKEN, num_additional_image_tokens=1 if clip else 0)
    return model, proc


def build_tiny_vlm(out: str | Path, tok, text_spec, seed: int, quant=("f32", "q8_0"),
                   vision: VisionSpec = VISION) -> dict:
    """Write ``out``/hf, the decoder GGUFs and the mmproj; returns {"files": {...}, "model": {...}}
    (paths relative to ``out``'s parent, for the tiny set's manifest)."""
    out = Path(out)
    vtok = vlm_tokenizer(tok)
    model, proc = build_hf_vlm(vtok, text_spec, vision, seed)
    _save_hf(model, proc, out / "hf")
    rel = out.name
    files = {"vlm_hf": f"{rel}/hf"}
    for q in quant:
        export_gguf(out / "hf", out / f"tiny-vlm-{q}.gguf", q, name="cepr-tiny-vlm")
        files[f"vlm_{q}"] = f"{rel}/tiny-vlm-{q}.gguf"
    export_mmproj(out / "hf", out / "mmproj-f32.gguf", name="cepr-tiny-vlm-mmproj")
    files["vlm_mmproj"] = f"{rel}/mmproj-f32.gguf"
    return {"files": files, "model": {"vision": asdict(vision), "image_tokens": image_tokens(vision),
                                      "image_token_id": vtok.token_to_id(IMAGE_TOKEN),
                                      "vocab_size": vtok.get_vocab_size()}}


# ---- the vision projector GGUF ------------------------------------------------------------------------------

_VIT_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.out_proj": "attn_out", "layer_norm1": "ln1", "layer_norm2": "ln2", "mlp.fc1": "ffn_up",
              "mlp.fc2": "ffn_down"}
_PREFIXES = (("model.vision_tower.vision_model.", "v."), ("model.vision_tower.", "v."),
             ("vision_tower.vision_model.", "v."), ("vision_tower.", "v."),
             ("model.multi_modal_projector.", "mm."), ("multi_modal_projector.", "mm."))


def mmproj_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's clip name for a LLaVA vision-tower or projector tensor; None for tensors not written (the
    decoder's, the CLIP post-layernorm); an error for one this converter does not know."""
    for src, dst in _PREFIXES:
        if hf_name.startswith(src):
            rest = hf_name[len(src):]
            break
    else:
        return None
    if dst == "mm.":
        for i, lin in ((0, "linear_1"), (2, "linear_2")):
            if rest.startswith(lin + "."):
                return f"mm.{i}.{rest[len(lin) + 1:]}"
        raise CeprError(f"no clip name for projector tensor {hf_name!r} (a 2-layer MLP projector is converted)")
    fixed = {"embeddings.class_embedding": "v.class_embd", "embeddings.patch_embedding.weight": "v.patch_embd.weight",
             "embeddings.patch_embedding.bias": "v.patch_embd.bias",
             "embeddings.position_embedding.weight": "v.position_embd.weight",
             "pre_layrnorm.weight": "v.pre_ln.weight", "pre_layrnorm.bias": "v.pre_ln.bias"}
    if rest in fixed:
        return fixed[rest]
    if rest.startswith(("post_layernorm.", "head.")):  # read after the feature layer / SigLIP's pooling head
        return None
    if rest.startswith("encoder.layers."):
        idx, _, tail = rest[len("encoder.layers."):].partition(".")
        part, _, kind = tail.rpartition(".")
        if part in _VIT_LAYER and kind in ("weight", "bias"):
            return f"v.blk.{int(idx)}.{_VIT_LAYER[part]}.{kind}"
    raise CeprError(f"no clip name for vision tensor {hf_name!r} (CLIP and SigLIP vision towers are converted)")


def _feature_layer(layer, n_layers: int) -> int:
    if isinstance(layer, (list, tuple)):
        if len(layer) != 1:
            raise CeprError(f"vision_feature_layer {layer}: only one feature layer is converted")
        layer = layer[0]
    k = int(layer) if int(layer) >= 0 else n_layers + 1 + int(layer)
    if not 0 < k <= n_layers:
        raise CeprError(f"vision_feature_layer {layer} is outside the tower's {n_layers} layers")
    return k


def export_mmproj(hf_dir: str | Path, out: str | Path, name: str | None = None) -> Path:
    """Write the vision tower and projector of the LLaVA folder ``hf_dir`` as a llama.cpp clip GGUF (F32)."""
    import gguf


    hf_dir, out = Path(hf_dir), Path(out)
    cfg_path = hf_dir / "config.json"
    if not cfg_path.is_file():
        raise CeprError(f"{hf_dir}: no config.json (a Hugging Face LLaVA folder is converted)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") != "llava":
        raise CeprError(f"{hf_dir}: model_type {cfg.get('model_type')!r}; the vision projector is written for "
                        "llava folders")
    vc = cfg.get("vision_config") or {}
    tower = vc.get("model_type", "clip_vision_model")
    strategy = cfg.get("vision_feature_select_strategy", "default")
    want = {"siglip_vision_model": "full", "clip_vision_model": "default"}
    if tower not in want:
        raise CeprError(f"{hf_dir}: vision tower {tower!r}; SigLIP and CLIP vision towers are converted")
    if strategy != want[tower]:
        raise CeprError(f"{hf_dir}: vision_feature_select_strategy {strategy!r} with a {tower}: llama.cpp's MLP "
                        f"projector gives one token per patch, which is {want[tower]!r} for this tower")
    proj_act = cfg.get("projector_hidden_act", "gelu")
    if proj_act not in TANH_GELU:
        raise CeprError(f"{hf_dir}: projector_hidden_act {proj_act!r}; llama.cpp's MLP projector applies the "
                        f"tanh GELU ({', '.join(TANH_GELU)})")
    act = vc.get("hidden_act", "quick_gelu")
    if act not in TANH_GELU + ("quick_gelu",):
        raise CeprError(f"{hf_dir}: vision hidden_act {act!r}; llama.cpp's clip has tanh GELU and quick GELU")
    hidden, ffn = int(vc["hidden_size"]), int(vc["intermediate_size"])
    if hidden == ffn:
        raise CeprError(f"{hf_dir}: vision intermediate_size == hidden_size ({hidden}): llama.cpp would take "
                        "ffn_up and ffn_down for a legacy swapped pair")
    n_layers = int(vc["num_hidden_layers"])
    feature = _feature_layer(cfg.get("vision_feature_layer", -2), n_layers)
    text_hidden = int((cfg.get("text_config") or {})["hidden_size"])
    pp = {}
    for fname in ("preprocessor_config.json", "processor_config.json"):
        if (hf_dir / fname).is_file():
            j = json.loads((hf_dir / fname).read_text())
            pp = j.get("image_processor", j)
            break
    if "image_mean" not in pp or "image_std" not in pp:
        raise CeprError(f"{hf_dir}: no image_mean/image_std in preprocessor_config.json or processor_config.json "
                        "(llama.cpp normalises with them)")
    mean = [float(x) for x in pp["image_mean"]]
    std = [float(x) for x in pp["image_std"]]

    weights = _load_weights(hf_dir)
    tensors = {}
    for hf_name, t in weights.items():
        g = mmproj_tensor_name(hf_name)
        if g is not None:
            tensors[g] = np.ascontiguousarray(t, dtype=np.float32)
    for need in ("v.patch_embd.weight", "v.position_embd.weight", "mm.0.weight", "mm.2.weight"):
        if need not in tensors:
            raise CeprError(f"{hf_dir}: no weight for {need} (is this a LLaVA folder?)")
    if tensors["mm.2.weight"].shape[0] != text_hidden:
        raise CeprError(f"{hf_dir}: the projector writes {tensors['mm.2.weight'].shape[0]} features, the decoder "
                        f"takes {text_hidden}")

    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), "clip")
    w.add_name(name or hf_dir.name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_llava_projector", True)
    if act in TANH_GELU:
        w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", int(vc["image_size"]))
    w.add_uint32("clip.vision.patch_size", int(vc["patch_size"]))
    w.add_uint32("clip.vision.embedding_length", hidden)
    w.add_uint32("clip.vision.feed_forward_length", ffn)
    w.add_uint32("clip.vision.projection_dim", text_hidden)
    w.add_uint32("clip.vision.block_count", n_layers)
    w.add_uint32("clip.vision.attention.head_count", int(vc["num_attention_heads"]))
    w.add_float32("clip.vision.attention.layer_norm_epsilon", float(vc.get("layer_norm_eps", 1e-5)))
    w.add_array("clip.vision.image_mean", mean)
    w.add_array("clip.vision.image_std", std)
    w.add_array("clip.vision.feature_layer", [feature])
    for g in sorted(tensors, key=_mmproj_order):
        w.add_tensor(g, tensors[g])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _mmproj_order(g: str):
    if g.startswith("v.blk."):
        return (1, int(g.split(".")[2]), g)
    return (0 if g.startswith("v.") else 2, 0, g)
