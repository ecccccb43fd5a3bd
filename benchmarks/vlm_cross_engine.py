"""The tiny LLaVA of `cepr models tiny` in transformers (Hugging Face folder) against llama.cpp (decoder GGUF +
vision projector GGUF) on the same images and prompt: next-token logits, greedy token, and llama.cpp's time to
evaluate the prompt with its image on one thread.

    python benchmarks/vlm_cross_engine.py --out /tmp/tiny             # the shipped tower (SigLIP-style)
    python benchmarks/vlm_cross_engine.py --out /tmp/tiny --tower clip  # a CLIP tower (class token), for contrast

Images are square at the projector's size, so neither engine resizes them and both normalise the same pixels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

PROMPT = "<|user|>\n{image}What is in front of the robot?</s>\n<|assistant|>\n"


def images(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size]
    return {"noise": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "ramp": np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], -1).astype(np.uint8),
            "flat": np.full((size, size, 3), (200, 30, 90), np.uint8)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/tiny", help="the tiny set (built with cepr models tiny if absent)")
    ap.add_argument("--tower", default="siglip", choices=["siglip", "clip"])
    ap.add_argument("--repeat", type=int, default=5, help="timed evaluations per image")
    a = ap.parse_args()

    import llama_cpp
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from cepr.llm.mtmd import VisionProjector, encode_png
    from cepr.llm.tiny import TARGET
    from cepr.llm.vlm import VISION, build_tiny_vlm
    from cepr.training.tiny_set import build_tiny

    out = Path(a.out)
    if not (out / "manifest.json").is_file():
        build_tiny(out, seed=0)
    manifest = json.loads((out / "manifest.json").read_text())
    vdir = out / "vlm"
    if a.tower != "siglip":
        from dataclasses import replace

        from tokenizers import Tokenizer

        vdir = out / f"vlm-{a.tower}"
        build_tiny_vlm(vdir, Tokenizer.from_file(str(out / "tokenizer.json")), TARGET, manifest["seed"] + 2_000_003,
                       ("f32", "q8_0"), replace(VISION, tower=a.tower))
    torch.set_num_threads(1)
    proc = AutoProcessor.from_pretrained(vdir / "hf")
    model = LlavaForConditionalGeneration.from_pretrained(vdir / "hf").eval()
    size = model.config.vision_config.image_size
    print(f"tower {a.tower}, image {size} px, {model.config.image_seq_length} image tokens\n")
    print("| decoder | KV cache | image | max abs logit diff | max abs logit | greedy equal | prompt eval ms (median) |")
    print("|---|---|---|---|---|---|---|")
    for quant, kv in (("f32", "f32"), ("f32", "f16"), ("q8_0", "f16")):
        kv_type = {"f32": 0, "f16": 1}[kv]
        llm = llama_cpp.Llama(model_path=str(vdir / f"tiny-vlm-{quant}.gguf"), n_ctx=512, n_threads=1,
                              n_threads_batch=1, verbose=False, logits_all=False, type_k=kv_type, type_v=kv_type)
        vp = VisionProjector(llm, vdir / "mmproj-f32.gguf")
        for name, img in images(size).items():
            inp = proc(images=Image.fromarray(img), text=PROMPT.format(image="<image>"), return_tensors="pt")
            with torch.no_grad():
                zh = model(**inp).logits[0, -1].numpy()
            png = encode_png(img)
            times = []
            for _ in range(a.repeat):
                llm.n_tokens = 0
                t0 = time.perf_counter()
                vp.eval(PROMPT.format(image=vp.marker), [png])
                times.append(1e3 * (time.perf_counter() - t0))
            zl = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            print(f"| {quant} | {kv} | {name} | {np.abs(zh - zl).max():.2e} | {np.abs(zh).max():.2f} | "
                  f"{int(zh.argmax()) == int(zl.argmax())} | {statistics.median(times):.1f} |")
        vp.close()
        del llm


if __name__ == "__main__":
    main()
