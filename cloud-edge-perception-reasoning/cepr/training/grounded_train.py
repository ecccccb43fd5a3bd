"""Train the grounded VLM (``cepr.llm.grounded``) on vision tokens cached once per frame, on CPU.

``extract_features`` runs a shipped segmentation model once per frame of a split (ONNX Runtime, the same pass the
edge or the cloud expert runs) and keeps, per frame: the vision tokens, the ground-truth answers of the five tasks,
the answers of the reasoner that pass feeds today (the edge planner, or the reference expert's planner on its own
mask) and the scene summary's text. ``cepr vlm features`` saves that as one ``.npz``; training and evaluation read
it, so an epoch costs no segmentation at all.

The model: the projector (layer norm, linear, tanh-GELU, linear) and a Llama decoder trained from scratch on the
project's byte-level BPE tokenizer (head_dim 64, so vLLM's CPU attention can serve it). One example is a frame and
a task: ``<s>``, the projected vision tokens, optionally the summary's text, the task's question with lettered
options (``cepr.llm.prompts``) and the space before the letter; the target is the true option's letter. The loss
is the next-token cross-entropy over the whole vocabulary at that position. A step is ``batch_frames`` frames with
all their tasks, packed: one decoder pass per frame computes the vision prefix once for its five questions
(``packed_logits``; each question's logits equal those of its own sequence). After training, a temperature for
the options' probabilities is fitted on val (or held-out train frames) by minimising the negative log-likelihood.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm import tqdm

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.risk import RiskObject, risk_sentence, risk_truth
from cepr.data.tasks import TASK_NAMES, answers_for_sample, camera_for, get_task
from cepr.errors import CeprError
from cepr.llm.gguf_export import export_gguf
from cepr.llm.grounded import (
    GRID,
    PROJECTOR,
    GroundedSpec,
    Prompts,
    option_probabilities,
    vision_tokens,
    write_spec,
)
from cepr.training.loop import open_checkpoint, save_checkpoint, train_loop

# the shipped encoders a grounded VLM is built on, and the side each runs on
ENCODERS = {"edge-int8": "edge", "edge-rgb-int8": "edge", "cloud": "cloud"}


# ---- features, cached once per frame -------------------------------------------------------------------------

@dataclass
class FeatureSet:
    """One split's frames as the grounded VLM sees them (``cepr vlm features`` writes it as ``.npz``)."""

    tokens: np.ndarray  # (frames, grid cells, token width) float16
    truth: list[dict[str, str]]  # the tasks' true answers
    baseline: list[dict[str, str]]  # what today's reasoner on the same pass answers (planner / expert)
    summaries: list[str]  # the scene summary's compact text
    frames: list[str]  # frame ids (folder/stem)
    meta: dict  # encoder, side, grid, feature channels, classes, data, split, seconds
    labels: list[str] | None = None  # each frame's TrainIds label path (what the metrics' truth reads)
    risk: list[list] | None = None  # each frame's risk objects ([name, distance, where], cepr.data.risk)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"truth": self.truth, "baseline": self.baseline, "summaries": self.summaries, "frames": self.frames,
               "meta": self.meta, "labels": self.labels, "risk": self.risk}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, tokens=self.tokens, doc=np.frombuffer(json.dumps(doc).encode(), np.uint8))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        path = Path(path)
        if not path.is_file():
            raise CeprError(f"feature file {path} not found: make it with `cepr vlm features`")
        with np.load(path) as z:
            doc = json.loads(bytes(z["doc"]).decode())
            return cls(z["tokens"], doc["truth"], doc["baseline"], doc["summaries"], doc["frames"], doc["meta"],
                       doc.get("labels"), doc.get("risk"))

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def concat(cls, paths) -> FeatureSet:
        """One set from several feature files of the same encoder and grid (e.g. the train split plus extra
        rendered frames); ``meta['sources']`` lists them."""
        sets = [cls.load(p) for p in paths]
        if len(sets) == 1:
            return sets[0]
        keys = ("encoder", "grid", "feature_channels", "num_classes", "depth")
        first = {k: sets[0].meta.get(k) for k in keys}
        for p, fs in zip(paths[1:], sets[1:]):
            other = {k: fs.meta.get(k) for k in keys}
            if other != first:
                raise CeprError(f"feature file {p} does not match {paths[0]}: {other} vs {first}")
        meta = dict(sets[0].meta, sources=[dict(fs.meta, path=str(p), frames=len(fs)) for p, fs in zip(paths, sets)],
                    seconds=round(sum(fs.meta.get("seconds", 0.0) for fs in sets), 2))
        def joined(field):
            if any(getattr(fs, field) is None for fs in sets):
                return None
            return [x for fs in sets for x in getattr(fs, field)]

        return cls(np.concatenate([fs.tokens for fs in sets]), joined("truth"), joined("baseline"),
                   joined("summaries"), joined("frames"), meta, joined("labels"), joined("risk"))


def extract_features(data: str, split: str, encoder: str = "edge-int8", frames: int | None = None,
                     grid: tuple[int, int] = GRID, progress: bool = True) -> FeatureSet:
    """Run ``encoder`` once over the first ``frames`` frames of ``split`` and keep what training needs."""
    from cepr.cloud.expert import MIN_OBJECT_CONFIDENCE
    from cepr.edge.models import calibration_for, model_path
    from cepr.edge.pipeline import EdgePipeline
    from cepr.edge.planner import Planner
    from cepr.edge.runtime import SegmentationModel
    from cepr.edge.summary import summarize
    from cepr.llm.prompts import summary_text

    path = model_path(encoder)
    side = ENCODERS.get(encoder, "edge")
    model = SegmentationModel(path, threads=1)
    if not model.has_features:
        raise CeprError(f"{path}: no features output; export it again with `cepr edge export`")
    pipe = None
    plain = Planner()
    if side == "edge":
        pipe = EdgePipeline(model, planner=Planner.from_file(calibration_for(path)),
                            depth_for_distance=model.use_depth)
    try:
        ds = CloudRoboticsDataset(find_index(data, split=split))
    except Exception as e:  # noqa: BLE001 - a missing data set surfaces as several error types
        raise CeprError(f"data {data!r} (split {split}): {e}") from None
    n = len(ds) if frames is None else min(frames, len(ds))
    if n == 0:
        raise CeprError(f"data {data!r}: the {split} split has no frames")
    toks, truth, base, sums, ids, labels, risk = [], [], [], [], [], [], []
    t0 = time.perf_counter()
    for i in tqdm(range(n), desc=f"features {encoder} {split}", unit="frame", disable=not progress):
        s = ds[i]
        if s.rgb is None or s.label is None:
            raise CeprError(f"frame {i} of {ds.index_path}: no image or no label")
        depth = s.depth if model.use_depth else None
        if pipe is not None:
            r = pipe.run_sample(s, features=True)
            logits, feats, summary = r.logits, r.features, r.summary
            answers = {t: a.answer for t, a in r.answers.items()}
        else:
            h, w = s.label.shape
            seg = model(s.rgb, None, features=True)
            logits, feats = seg.logits, seg.features
            summary = summarize(seg.label, None, camera_for(s.sidecar, w, h), probs=seg.probs, params=plain.params,
                                mask_size=None, min_confidence=MIN_OBJECT_CONFIDENCE)
            answers = {t: a.answer for t, a in plain.answer(summary).items()}
        toks.append(vision_tokens(feats, logits, depth, grid).astype(np.float16))
        truth.append(answers_for_sample(s))
        base.append(answers)
        sums.append(summary_text(summary))
        ids.append(f"{s.frame.rgb_path.parent.name}/{s.frame.stem}")
        labels.append(str(s.frame.label_path))
        risk.append([[o.name, o.distance, o.where] for o in risk_truth(s.frame.label_path)])
    meta = {"encoder": encoder, "side": side, "grid": list(grid), "feature_channels": int(feats.shape[0]),
            "num_classes": int(logits.shape[0]), "depth": bool(model.use_depth), "data": str(data), "split": split,
            "seconds": round(time.perf_counter() - t0, 2)}
    return FeatureSet(np.stack(toks), truth, base, sums, ids, meta, labels, risk)


# ---- the model -----------------------------------------------------------------------------------------------

def check_decoder_shape(cfg):
    """A config's decoder in llama.cpp's layout (heads x head_dim = hidden, kv_heads dividing heads), for the
    configs' validators."""
    if cfg.heads * cfg.head_dim != cfg.hidden or cfg.heads % cfg.kv_heads:
        raise ValueError(f"heads x head_dim must equal hidden and kv_heads divide heads (llama.cpp's layout): "
                         f"{cfg.heads} x {cfg.head_dim} != {cfg.hidden} or {cfg.heads} % {cfg.kv_heads}")
    return cfg


class TrainGroundedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: list[str] = Field(min_length=1)  # FeatureSet files, concatenated

    @field_validator("train", mode="before")
    @classmethod
    def _one_or_more(cls, v):
        return [v] if isinstance(v, str) else v
    val: str | None = None  # a FeatureSet file; None: hold out the last val_frames training frames
    out: str
    hidden: int = Field(256, ge=64)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)
    head_dim: int = Field(64, ge=32, description="vLLM's CPU attention needs >= 32")
    ffn: int = Field(768, ge=64)
    with_summary: bool = False
    risk_summary: bool = False  # also learn to write the one-sentence risk summary (cepr.data.risk)
    risk_weight: float = Field(0.5, ge=0)  # its token-mean loss's weight beside the tasks' mean
    batch_frames: int = Field(8, ge=1)
    steps: int = Field(100000, ge=1)
    max_minutes: float = Field(20.0, gt=0)
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(30, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    val_frames: int = Field(200, ge=1)
    val_every: int = Field(200, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    progress: bool = True

    @model_validator(mode="after")
    def _heads_fill_the_width(self):
        return check_decoder_shape(self)

    def training_key(self) -> dict:
        return self.model_dump(exclude={"steps", "max_minutes", "threads", "progress", "checkpoint_every", "out",
                                        "val_every"})


def _tokenizer(seed: int):
    from cepr.llm.tiny import train_tokenizer
    from cepr.training.corpus import build_corpus

    return train_tokenizer(build_corpus(seed))


def build_model(cfg: TrainGroundedConfig, token_width: int, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    dec = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=cfg.hidden, intermediate_size=cfg.ffn, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim,
        max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=0,
        eos_token_id=1, pad_token_id=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}))
    return GroundedModel(token_width, dec)


def _module():
    import torch
    from torch import nn

    class _Grounded(nn.Module):
        def __init__(self, token_width: int, decoder):
            super().__init__()
            hidden = decoder.config.hidden_size
            self.norm = nn.LayerNorm(token_width)
            self.fc1 = nn.Linear(token_width, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.decoder = decoder

        def project(self, tokens):
            return self.fc2(nn.functional.gelu(self.fc1(self.norm(tokens)), approximate="tanh"))

        def next_logits(self, tokens, text_ids, lengths=None):
            """Next-token logits after <s>, the projected tokens and ``text_ids`` (right-padded; ``lengths``: each
            row's real text length)."""
            emb = self.decoder.get_input_embeddings()
            b = tokens.shape[0]
            bos = emb(torch.zeros(b, 1, dtype=torch.long))
            x = torch.cat([bos, self.project(tokens), emb(text_ids)], 1)
            mask = None
            last = torch.full((b,), x.shape[1] - 1, dtype=torch.long)
            if lengths is not None:
                pos = torch.arange(text_ids.shape[1])[None]
                keep = pos < lengths[:, None]
                mask = torch.cat([torch.ones(b, 1 + tokens.shape[1], dtype=torch.long), keep.long()], 1)
                last = 1 + tokens.shape[1] + lengths - 1
            out = self.decoder(inputs_embeds=x, attention_mask=mask, logits_to_keep=0 if mask is not None else 1)
            logits = out.logits
            return logits[torch.arange(b), last] if mask is not None else logits[:, -1]

    return _Grounded


def GroundedModel(token_width: int, decoder):
    return _module()(token_width, decoder)


def packed_logits(model, tokens, segments, full=()):
    """Next-token logits at the end of every task's text, all tasks of a frame in one decoder pass.

    ``segments``: per task, (ids (batch, width) right-padded, lengths (batch,) or None). The sequence is ``<s>``,
    the projected tokens, then every task's text one after another; a block attention mask lets each text see the
    shared prefix and itself only, and its positions restart where the prefix ends, so each text's logits are
    exactly those of its own separate sequence (``next_logits``) while the prefix is computed once per frame.
    Returns one (batch, vocab) tensor per segment, or (batch, width, vocab) for the segments listed in ``full``
    (every position's logits: a generated sentence's loss)."""
    import torch

    emb = model.decoder.get_input_embeddings()
    b, prefix = tokens.shape[0], 1 + tokens.shape[1]
    parts = [emb(torch.zeros(b, 1, dtype=torch.long)), model.project(tokens)]
    total = prefix + sum(ids.shape[1] for ids, _ in segments)
    allowed = torch.zeros(b, total, total, dtype=torch.bool)
    allowed[:, :prefix, :prefix] = torch.tril(torch.ones(prefix, prefix, dtype=torch.bool))
    pos = torch.zeros(b, total, dtype=torch.long)
    pos[:, :prefix] = torch.arange(prefix)
    ends, start = [], prefix
    for ids, lengths in segments:
        w = ids.shape[1]
        parts.append(emb(ids))
        n = lengths if lengths is not None else torch.full((b,), w, dtype=torch.long)
        j = torch.arange(w)
        real = j[None] < n[:, None]  # (b, w)
        causal = torch.tril(torch.ones(w, w, dtype=torch.bool))
        allowed[:, start:start + w, :prefix] = real[:, :, None]
        # a real token sees the real tokens before it; padding sees itself only (a row must see something)
        allowed[:, start:start + w, start:start + w] = (causal[None] & real[:, None, :] & real[:, :, None]) \
            | (torch.eye(w, dtype=torch.bool)[None] & ~real[:, :, None])
        pos[:, start:start + w] = prefix + j
        ends.append(start + n - 1)
        start += w
    hidden = model.decoder.model(inputs_embeds=torch.cat(parts, 1), attention_mask=allowed[:, None],
                                 position_ids=pos).last_hidden_state
    rows = torch.arange(b)
    out, start = [], prefix
    for k, ((ids, _), e) in enumerate(zip(segments, ends)):
        w = ids.shape[1]
        out.append(model.decoder.lm_head(hidden[:, start:start + w] if k in full else hidden[rows, e]))
        start += w
    return out


def _batch(fs: FeatureSet, idx, task: str, prompts: Prompts, with_summary: bool):
    import torch

    tokens = torch.from_numpy(fs.tokens[idx].astype(np.float32))
    rows = [prompts.text_ids(task, fs.summaries[i] if with_summary else None) for i in idx]
    lengths = torch.tensor([len(r) for r in rows])
    width = int(lengths.max())
    ids = torch.full((len(rows), width), 2, dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r)
    same = bool((lengths == width).all())
    opts = get_task(task).answers
    target = torch.tensor([prompts.letters[opts.index(fs.truth[i][task])] for i in idx])
    return tokens, ids, (None if same else lengths), target


def _risk_segment(fs: FeatureSet, idx, prompts: Prompts, rng):
    """The risk summary's segment of the frames ``idx``: (ids, lengths, targets), targets -100 but where the next
    token is the sentence's (a wording drawn per frame from ``rng``)."""
    import torch

    if fs.risk is None:
        raise CeprError("these features carry no risk objects: extract them again with `cepr vlm features`")
    head = prompts.risk_ids
    rows = []
    for i in idx:
        objs = [RiskObject(n, d, w) for n, d, w in fs.risk[i]]
        rows.append(head + prompts.sentence_ids(risk_sentence(objs, fs.truth[i]["action"], int(rng.integers(6)))))
    lengths = torch.tensor([len(r) for r in rows])
    width = int(lengths.max())
    ids = torch.full((len(rows), width), 2, dtype=torch.long)
    target = torch.full((len(rows), width), -100, dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r)
        target[k, len(head) - 1:len(r) - 1] = torch.tensor(r[len(head):])
    return ids, lengths, target


def _packed_batch(fs: FeatureSet, idx, prompts: Prompts, with_summary: bool, risk_rng=None):
    """(vision tokens, [(ids, lengths)] per task, [targets] per task) of the frames ``idx``, for ``packed_logits``;
    with ``risk_rng``, a last segment with the risk summary and its (frames, width) targets."""
    segments, targets, tokens = [], [], None
    for task in TASK_NAMES:
        tokens, ids, lengths, target = _batch(fs, idx, task, prompts, with_summary)
        segments.append((ids, lengths))
        targets.append(target)
    if risk_rng is not None:
        ids, lengths, target = _risk_segment(fs, idx, prompts, risk_rng)
        segments.append((ids, lengths))
        targets.append(target)
    return tokens, segments, targets


def option_logits(model, fs: FeatureSet, prompts: Prompts, with_summary: bool, idx=None, batch: int = 32) -> dict:
    """{task: (frames, options) letter logits} for the frames ``idx`` (default: all)."""
    import torch

    idx = list(range(len(fs))) if idx is None else list(idx)
    chunks = {t: [] for t in TASK_NAMES}
    model.eval()
    with torch.no_grad():
        for k in range(0, len(idx), batch):
            tokens, segments, _ = _packed_batch(fs, idx[k:k + batch], prompts, with_summary)
            for task, lg in zip(TASK_NAMES, packed_logits(model, tokens, segments)):
                chunks[task].append(lg[:, prompts.option_ids(task)].float().numpy())
    model.train()
    return {t: np.concatenate(c) for t, c in chunks.items()}


def accuracy_of(logits: dict, fs: FeatureSet, idx=None) -> float:
    idx = list(range(len(fs))) if idx is None else list(idx)
    right = n = 0
    for task, lg in logits.items():
        opts = get_task(task).answers
        for row, i in zip(lg, idx):
            right += opts[int(row.argmax())] == fs.truth[i][task]
            n += 1
    return right / max(n, 1)


def fit_temperature(logits: dict, fs: FeatureSet, idx=None) -> float:
    """The temperature minimising the negative log-likelihood of the true options (a grid, then refined)."""
    idx = list(range(len(fs))) if idx is None else list(idx)
    pairs = []
    for task, lg in logits.items():
        opts = get_task(task).answers
        pairs += [(row, opts.index(fs.truth[i][task])) for row, i in zip(lg, idx)]

    def nll(t):
        return -sum(math.log(max(option_probabilities(row, t)[y], 1e-12)) for row, y in pairs) / len(pairs)

    grid = np.exp(np.linspace(math.log(0.25), math.log(8.0), 41))
    best = min(grid, key=nll)
    fine = np.linspace(best / 1.1, best * 1.1, 21)
    return float(round(min(fine, key=nll), 4))


def train(cfg: TrainGroundedConfig, resume: bool = False, log=print) -> dict:
    import torch

    out = Path(cfg.out)
    ckpt_path, ckpt = open_checkpoint(out, cfg.training_key(), resume)
    train_set = FeatureSet.concat(cfg.train)
    if cfg.risk_summary and train_set.risk is None:
        raise CeprError(f"{', '.join(cfg.train)}: no risk objects in the features (made before risk summaries); "
                        "extract them again with `cepr vlm features`")
    if cfg.val:
        val_set, val_idx, order = FeatureSet.load(cfg.val), None, list(range(len(train_set)))
        val_source = f"{cfg.val} ({len(val_set)} frames)"
    else:
        n = min(cfg.val_frames, len(train_set) // 5)
        if n < 1:
            raise CeprError("too few training frames to hold some out for validation; give --val")
        order = list(range(len(train_set) - n))
        val_set, val_idx = train_set, list(range(len(train_set) - n, len(train_set)))
        val_source = f"{n} held-out train frames"
    if val_idx is None:
        val_idx = list(range(min(cfg.val_frames, len(val_set))))
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok = _tokenizer(cfg.seed)
    prompts = Prompts(tok)
    width = train_set.tokens.shape[-1]
    model = build_model(cfg, width, tok.get_vocab_size())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, spent_before = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        step, spent_before = ckpt["step"], ckpt["seconds"]
        log(f"resuming at step {step}")
    rng = np.random.default_rng(cfg.seed + step)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"grounded VLM on {train_set.meta['encoder']}: {n_params:,} parameters, {len(order)} train frames, "
        f"validation on {val_source}; {torch.get_num_threads()} threads")
    t_start = time.perf_counter()
    log_path = out / "log.jsonl"

    def write(rec):
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def save(s: int) -> None:
        save_checkpoint(ckpt_path, {"key": cfg.training_key(), "step": s, "model": model.state_dict(),
                                    "optim": opt.state_dict(),
                                    "seconds": spent_before + time.perf_counter() - t_start})

    def lr_at(s: int, elapsed: float) -> float:
        warm = min(1.0, (s + 1) / cfg.warmup) if cfg.warmup else 1.0
        frac = min(1.0, elapsed / (cfg.max_minutes * 60))
        return cfg.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))  # cosine over the budget

    def one_step(s: int) -> dict:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr = lr_at(s, time.perf_counter() - t_start)
        idx = [order[int(j)] for j in rng.choice(len(order), min(cfg.batch_frames, len(order)), replace=False)]
        tokens, segments, targets = _packed_batch(train_set, idx, prompts, cfg.with_summary,
                                                  rng if cfg.risk_summary else None)
        n = len(TASK_NAMES)
        logits = packed_logits(model, tokens, segments, full=(n,) if cfg.risk_summary else ())
        loss = sum(torch.nn.functional.cross_entropy(lg, y) for lg, y in zip(logits[:n], targets[:n])) / n
        if cfg.risk_summary:
            lg = logits[n]
            loss = loss + cfg.risk_weight * torch.nn.functional.cross_entropy(
                lg.reshape(-1, lg.shape[-1]), targets[n].reshape(-1), ignore_index=-100)
        if not math.isfinite(loss.item()):
            raise CeprError(f"step {s}: the loss is {loss.item()} (lower --lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        write({"step": s + 1, "loss": round(loss.item(), 5), "lr": round(lr, 8),
               "seconds": round(time.perf_counter() - t0, 3)})
        return {"loss": f"{loss.item():.3f}"}

    last_val = None

    def validate(s: int, _figures: dict) -> None:
        nonlocal last_val
        if s % cfg.val_every == 0:
            acc = accuracy_of(option_logits(model, val_set, prompts, cfg.with_summary, val_idx), val_set, val_idx)
            last_val = {"step": s, "val_acc": round(acc, 4)}
            write(last_val)

    done = train_loop(one_step, steps=cfg.steps, start_step=step, max_minutes=cfg.max_minutes,
                      checkpoint_every=cfg.checkpoint_every, save=save, desc="grounded train", progress=cfg.progress,
                      on_step=validate, t_start=t_start)
    vlog = option_logits(model, val_set, prompts, cfg.with_summary, val_idx)
    acc = accuracy_of(vlog, val_set, val_idx)
    temperature = fit_temperature(vlog, val_set, val_idx)
    spec = GroundedSpec(encoder=train_set.meta["encoder"], side=train_set.meta["side"],
                        feature_channels=train_set.meta["feature_channels"],
                        num_classes=train_set.meta["num_classes"], grid=tuple(train_set.meta["grid"]),
                        with_summary=cfg.with_summary, risk_summary=cfg.risk_summary, temperature=temperature,
                        tasks=TASK_NAMES,
                        extra={"steps": done.step, "stopped": done.stopped, "val_acc": round(acc, 4),
                               "val_source": val_source, "train_frames": len(order), "parameters": n_params,
                               "minutes": round((spent_before + time.perf_counter() - t_start) / 60, 2),
                               "train_features": train_set.meta, "config": cfg.model_dump()})
    export(model, tok, out, spec)
    log(f"stopped by {done.stopped} at step {done.step}; val accuracy {acc:.4f}, temperature {temperature}; {out}")
    return spec.to_dict()


def export(model, tok, out: Path, spec: GroundedSpec, quant=("f32", "q8_0", "q4_0")) -> None:
    """``grounded.json``, ``projector.npz`` (numpy), ``decoder/`` (a Hugging Face Llama folder with the tokenizer)
    and ``decoder-<quant>.gguf`` for llama.cpp."""
    from cepr.llm.tiny import _hf_tokenizer, _save_hf

    w = {"norm.weight": model.norm.weight, "norm.bias": model.norm.bias, "fc1.weight": model.fc1.weight,
         "fc1.bias": model.fc1.bias, "fc2.weight": model.fc2.weight, "fc2.bias": model.fc2.bias}
    np.savez(out / PROJECTOR, **{k: v.detach().float().numpy() for k, v in w.items()})
    _save_hf(model.decoder, _hf_tokenizer(tok), out / "decoder")
    for q in quant:
        export_gguf(out / "decoder", out / f"decoder-{q}.gguf", q, name=f"cepr-grounded-{out.name}")
    write_spec(out, spec)


def load_prompts(folder: str | Path):
    """(prompts, spec) of a ``train`` output folder: what every engine needs beside its weights."""
    from cepr.llm.grounded import load_prompts as _load

    return _load(folder)


def load(folder: str | Path):
    """(model, prompts, spec) of a ``train`` output folder, in torch (for evaluation)."""
    import torch
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    prompts, spec = load_prompts(folder)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a weight-loading bar per model would interleave with the table
    try:
        dec = LlamaForCausalLM.from_pretrained(str(folder / "decoder"), dtype=torch.float32).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model = GroundedModel(spec.token_width, dec)
    with np.load(folder / PROJECTOR) as z:
        sd = {k: torch.from_numpy(z[k]) for k in z.files}
    model.load_state_dict(sd, strict=False)
    return model.eval(), prompts, spec


