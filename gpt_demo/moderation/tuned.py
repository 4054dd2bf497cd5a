"""MiniLM's top layers fine-tuned for moderation: the half of the v7 (and v4-v6) classifier that is not frozen.

    >>> from gpt_demo.moderation.tuned import check_tuned_path
    >>> check_tuned_path(["I want to kill him", "hello"], cut=4) < 1e-5     # doctest: +SKIP
    True

The v7 head, like v4-v6, blends two views of a text (``Head.tuned_blend`` each): the v3 head on the frozen
sentence embedding, and MiniLM's top ``tuned_layers`` transformer layers trained on the task,
followed by a linear layer over the normalised mean of their output (eight logits). The layers
below stay frozen, so in training their output (``cut = 6 - tuned_layers``) is computed once per
text and cached (``frozen_states``, float16), and only the top layers run forward and backward:
on 2 cores ~190 texts/s with v4's two tuned layers and 110-140 with v5's three, against 40 end to end; on v6's faster host
165-170 with three and 110-150 with four. At inference one MiniLM
pass gives both views: the sentence embedding from its own last layer, and the tuned layers run on
layer ``cut``'s states, rounded to float16 as in training. The loss is the head's: masked,
class-weighted BCE (positive and row weights computed the head's way, on the tuning rows); AdamW
with a one-cycle schedule; the epoch with the best mean validation AUPRC is kept. Large sources are subsampled to ``tuned_rows_per_source`` training rows (seeded), so
the shipped run tuned its four layers on 13,035 rows (about 5 minutes on 2 cores, on a fast host). Training reads each text's first
``MAX_TOKENS`` word pieces; inference reads MiniLM's whole window (up to 256), which differs for the
1.3 % of training rows that are longer.
``benchmarks/moderation_finetune.py`` measures it leave-one-source-out.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..util import replacing
from .classifier import CATEGORIES

LAYERS = 6  # transformer layers of MiniLM-L6
MAX_TOKENS = 128  # word pieces per text in training (98.7 % of the training rows are shorter)
SCALE = 10.0  # a unit vector's logits need a scale to reach confident probabilities
# Parameter shapes of one MiniLM layer (hidden 384, intermediate 1536), as the head file stores them.
_LAYER_SHAPES = {
    "attention.self.query.weight": (384, 384), "attention.self.query.bias": (384,),
    "attention.self.key.weight": (384, 384), "attention.self.key.bias": (384,),
    "attention.self.value.weight": (384, 384), "attention.self.value.bias": (384,),
    "attention.output.dense.weight": (384, 384), "attention.output.dense.bias": (384,),
    "attention.output.LayerNorm.weight": (384,), "attention.output.LayerNorm.bias": (384,),
    "intermediate.dense.weight": (1536, 384), "intermediate.dense.bias": (1536,),
    "output.dense.weight": (384, 1536), "output.dense.bias": (384,),
    "output.LayerNorm.weight": (384,), "output.LayerNorm.bias": (384,),
}


def cut_layer(tuned_layers: int) -> int:
    """The MiniLM hidden state the tuned layers read: ``hidden_states[cut]``, the output of layer ``cut`` (0: embeddings)."""
    return LAYERS - tuned_layers


def expected_shapes(tuned_layers: int) -> dict[str, tuple]:
    """Every tensor a head file's tuned part holds (without the ``tuned.`` prefix) and its shape."""
    out = {f"layers.{j}.{k}": v for j in range(tuned_layers) for k, v in _LAYER_SHAPES.items()}
    out.update({"out.weight": (len(CATEGORIES), 384), "out.bias": (len(CATEGORIES),)})
    return out


def _minilm():
    from ..embeddings import minilm_model

    st = minilm_model()
    return st[0].auto_model, st.tokenizer


def tuned_module(tuned_layers: int, tensors: dict[str, np.ndarray] | None = None, dropout: float = 0.1):
    """MiniLM's top ``tuned_layers`` layers (copies) -> normalised mean over tokens -> 8 logits; ``tensors`` loads weights."""
    import torch
    from transformers.masking_utils import create_bidirectional_mask

    bert, _ = _minilm()
    cut = cut_layer(tuned_layers)

    class Tuned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(copy.deepcopy(layer) for layer in bert.encoder.layer[cut:])
            self.drop = torch.nn.Dropout(dropout)
            self.out = torch.nn.Linear(384, len(CATEGORIES))

        def pooled(self, h, mask):
            """(B, T, 384) states after layer ``cut`` and a (B, T) mask -> (B, 384) normalised mean of the top layer."""
            attn = create_bidirectional_mask(config=bert.config, inputs_embeds=h, attention_mask=mask)
            for layer in self.layers:
                h = layer(h, attention_mask=attn)
                h = h[0] if isinstance(h, tuple) else h
            return self.mean(h, mask)

        @staticmethod
        def mean(h, mask):
            m = mask.unsqueeze(-1).to(h.dtype)
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)

        def forward(self, h, mask):
            return self.out(self.drop(self.pooled(h, mask)) * SCALE)

        def infer(self, h, mask, int8: bool = False):
            """``forward`` for inference through ``gpt_demo.moderation.lean``: the same logits, less Python per layer
            (``int8``: its layers' matrix products in 8-bit integers, close but not the same logits)."""
            from .lean import lean_layers, padding_mask, run_layers

            if self.training:
                raise RuntimeError("Tuned.infer is for inference; call model.eval() first, or forward() to train")
            top = run_layers(lean_layers(self, self.layers, int8=int8), h, padding_mask(mask))
            return self.out(self.mean(top, mask) * SCALE)

    model = Tuned()
    if tensors is not None:
        state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"tuned layers: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
    return model.eval()


def module_tensors(model) -> dict[str, np.ndarray]:
    """The module's weights as float32 arrays holding float16 values: what the head file stores, exactly."""
    import torch

    return {k: v.detach().to(torch.float16).float().numpy().copy() for k, v in model.state_dict().items()}


def check_tuned_path(texts: Sequence[str], cut: int = 4) -> float:
    """Largest difference between MiniLM's sentence embedding and an untrained copy of its top layers run on layer ``cut``."""
    import torch

    from ..embeddings import _tokenize_lock

    bert, tok = _minilm()
    with _tokenize_lock:  # the shared fast tokenizer, one call at a time
        x = tok(list(texts), truncation=True, max_length=MAX_TOKENS, padding=True, return_tensors="pt")
    model = tuned_module(LAYERS - cut)
    with torch.inference_mode():
        hs = bert(**x, output_hidden_states=True).hidden_states
        m = x["attention_mask"].unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((hs[LAYERS] * m).sum(1) / m.sum(1), dim=-1)
        return float((model.pooled(hs[cut], x["attention_mask"]) - ref).abs().max())


# -- training -------------------------------------------------------------------------
def frozen_states(texts: Sequence[str], cut: int, cache_dir: Path | None, log=None) -> tuple:
    """Every text's hidden states after layer ``cut`` (float16, concatenated) and the (N + 1,) offsets of each text.

    Cached whole in ``cache_dir`` under a digest of the texts (about 1 GB for 49,000 rows); tensors only,
    so the cache is read with ``torch.load(weights_only=True)``.
    """
    import torch

    from ..embeddings import _tokenize_lock

    texts = list(texts)
    key = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"minilm_states_layer{cut}_{MAX_TOKENS}_{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        off = saved["off"].numpy()
        if len(off) == len(texts) + 1 and int(off[-1]) == saved["h"].shape[0]:
            return saved["h"], off
    bert, tok = _minilm()
    with _tokenize_lock:
        ids = tok(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    lens = np.array([len(i) for i in ids])
    order = np.argsort(lens)
    off = np.zeros(len(texts) + 1, dtype=np.int64)
    off[1:] = np.cumsum(lens)
    states = torch.empty((int(off[-1]), 384), dtype=torch.float16)
    bert.eval()
    t0 = time.time()
    with torch.inference_mode():
        for b in range(0, len(order), 64):
            idx = order[b:b + 64]
            with _tokenize_lock:
                x = tok([texts[i] for i in idx], truncation=True, max_length=MAX_TOKENS, padding=True, return_tensors="pt")
            hs = bert(**x, output_hidden_states=True).hidden_states[cut]
            for j, i in enumerate(idx):
                states[off[i]:off[i + 1]] = hs[j, :lens[i]].half()
            if log and b % 6400 == 0:
                log(f"  frozen states {b}/{len(order)} ({time.time() - t0:.0f}s)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            torch.save({"h": states, "off": torch.from_numpy(off)}, tmp)
    return states, off


def collate(states, off, idx):
    import torch

    lens = [int(off[i + 1] - off[i]) for i in idx]
    h = torch.zeros((len(idx), max(lens), 384))
    mask = torch.zeros((len(idx), max(lens)), dtype=torch.long)
    for j, i in enumerate(idx):
        h[j, :lens[j]] = states[off[i]:off[i + 1]].float()
        mask[j, :lens[j]] = 1
    return h, mask


def length_sorted_batches(idx, lens, batch_size: int, rng) -> list:
    """Shuffled batches of similar length: the rows shuffled, sorted by length within chunks of 50 batches."""
    idx = np.asarray(idx)[rng.permutation(len(idx))]
    out = []
    for c in range(0, len(idx), batch_size * 50):
        chunk = idx[c:c + batch_size * 50]
        chunk = chunk[np.argsort(lens[chunk], kind="stable")]
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def state_scores(model, states, off, idx, batch_size: int = 128) -> np.ndarray:
    """(len(idx), 8) probabilities of the rows ``idx`` from their cached states."""
    import torch

    model.eval()
    idx = np.asarray(idx)
    order = idx[np.argsort(np.diff(off)[idx], kind="stable")]
    out = {}
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            sel = order[b:b + batch_size]
            p = torch.sigmoid(model(*collate(states, off, sel))).numpy().astype(np.float64)
            out.update(zip(sel.tolist(), p))
    return np.stack([out[i] for i in idx.tolist()])


def subsample(idx, rows, cap: int, seed: int) -> list[int]:
    """At most ``cap`` of each source's rows among ``idx`` (seeded), in index order."""
    rng, by_source = np.random.RandomState(seed), {}
    for i in idx:
        by_source.setdefault(rows[i].source, []).append(i)
    out = []
    for _, members in sorted(by_source.items()):
        members = np.array(members)
        out += list(members[rng.permutation(len(members))[:cap]] if len(members) > cap else members)
    return sorted(int(i) for i in out)


def train_tuned(states, off, rows, y: np.ndarray, tr: Sequence[int], va: Sequence[int], cfg, log=None) -> tuple:
    """Fine-tune the top ``cfg.tuned_layers`` on the rows ``tr``; returns the module at its best validation epoch, and that epoch.

    ``states, off`` from ``frozen_states`` over ``rows``; ``y`` (N, 8) labels with nan = unknown.
    """
    import torch

    from .train import evaluate, row_weights

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    torch.manual_seed(cfg.seed)
    rng = np.random.RandomState(cfg.seed)
    model = tuned_module(cfg.tuned_layers)
    tr, va = list(tr), list(va)
    lens = np.diff(off)
    ytr = y[tr]
    known = ~np.isnan(ytr)
    pos, neg = ((ytr == 1) & known).sum(0), ((ytr == 0) & known).sum(0)
    pos_weight = torch.tensor(np.clip(neg / np.maximum(pos, 1), 1.0, cfg.max_pos_weight), dtype=torch.float32)
    weight = dict(zip(tr, row_weights([rows[i] for i in tr], cfg)))
    yt = torch.tensor(np.nan_to_num(y, nan=0.0), dtype=torch.float32)
    mt = torch.tensor(~np.isnan(y), dtype=torch.float32)
    opt = torch.optim.AdamW([{"params": model.layers.parameters(), "lr": cfg.tuned_lr},
                             {"params": model.out.parameters(), "lr": cfg.tuned_head_lr}], weight_decay=0.01)
    bs = cfg.tuned_batch_size
    steps = cfg.tuned_epochs * ((len(tr) + bs - 1) // bs + 50)  # 50 spare steps an epoch: the run ends before the floor
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.tuned_lr, cfg.tuned_head_lr], total_steps=steps, pct_start=0.1)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    best = (-1.0, None, 0)
    for epoch in range(cfg.tuned_epochs):
        model.train()
        t0 = time.time()
        for batch in length_sorted_batches(tr, lens, bs, rng):
            w = torch.tensor([weight[i] for i in batch], dtype=torch.float32)[:, None]
            per = loss_fn(model(*collate(states, off, batch)), yt[batch]) * mt[batch] * w  # unknown labels count 0
            loss = per.sum() / (mt[batch] * w).sum().clamp_min(1e-6)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        ev = evaluate(state_scores(model, states, off, va), y[va])
        aps = [m["auprc"] for m in ev.values() if m["auprc"] is not None]
        mean_ap = float(np.mean(aps)) if aps else 0.0
        log(f"    tuned epoch {epoch + 1}: validation mean AUPRC {mean_ap:.4f} ({len(tr) / (time.time() - t0):.0f} rows/s)")
        if mean_ap > best[0]:
            best = (mean_ap, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
    model.load_state_dict(best[1])
    return model.eval(), best[2]
