"""Train the moderation head: MiniLM features -> MLP + logistic regression, plus tuned top layers; masked BCE; thresholds.

    gpt-demo moderation train                                   # writes gpt_demo/data/moderation_*.{safetensors,json}
    gpt-demo moderation train --data-dir ../shared/data/moderation --out-dir /tmp/head --epochs 40
    gpt-demo moderation train --features emb max6 --blend 0      # another feature spec, the MLP alone
    gpt-demo moderation train --tuned-layers 0                   # the v3 design (the frozen head alone), on today's examples
    python -m gpt_demo.moderation.train --help

Data. Every ``*.jsonl`` in ``data_dir`` (default ``../shared/data/moderation`` beside the repository;
rows ``{"id", "source", "text", "labels": {"S": 1|0|null, ...}}``, see its README) plus the project's
own examples in ``gpt_demo/data/moderation_examples.jsonl`` (``source="gpt-demo"``). Unknown labels
(null) are masked out of the loss. XSTest's 200 unsafe contrast prompts, all-unknown in the shared
file, are labelled here from their ``meta.focus`` (``XSTEST_UNSAFE``). Label map v2 (the default,
``remap_v2``) adds what each source implies: HateCheck, ToxiGen, ETHOS, Davidson and Toxic Spans hold
no sexual/minors, self-harm or graphic text (HateCheck no sexual text either), HateCheck's abuse of
individuals ("I despise you.") is harassment, its non-threat functionalities are not violence, and
ToxiGen's neutral statements are negative for everything. Rows whose normalised text repeats an
earlier row are dropped (their known labels are merged into the first).

The project's own examples (934 rows, written for this project from OpenAI's category definitions,
never from test items; ``meta.purpose`` says what each is for, ``meta.batch`` when it was written)
cover what the public sets lack: sexual text that is not a request, self-harm posts, graphic violence
(the public sets have no violence/graphic positive at all), non-explicit sexual/minors requests, and,
in batch 2 (issue #16), threats, incitement and glorification of violence, harassment of individuals,
hate/threatening and hate without threats, and hard negatives (violent words in idioms, sport, games,
cooking and computing; history, news and safety questions about violence; blunt criticism; protected
groups mentioned neutrally), and in batch 4 insults of commenters, writers, public figures and groups that
are not protected classes, beside civil criticism of them. Ambiguous neighbours of a positive are left unknown (violence on self-harm
rows, harassment on threats and on group hate). The shared data is not committed.

Splits. Per (source, positive-label signature) group, rows are ordered by a seeded hash of their
text and cut into test (``test_fraction``), validation (``val_fraction``) and train, so every source
and every category is represented in each split. The head is trained on train only and the epoch
with the best mean validation AUPRC is kept (for the MLP and the logistic regression each). Each
category's threshold maximises F1 on the validation split (negatives down-weighted so positives
are at least ``threshold_prevalence`` of the rows; 0.5 when a category has fewer than
``min_val_positives`` positives), then is raised until at most ``lookalike_fpr`` of the validation
split's benign look-alikes (XSTest safe prompts, the team's all-negative rows) reach it. Last, while
more than ``lookalike_flag_rate`` of those look-alikes is flagged by any category, the one cheapest
to unflag (least validation recall lost) is unflagged (``unflag_lookalikes``): eight per-category
allowances would otherwise add up. Neither rule takes a category below ``lookalike_recall`` of the
recall its F1-best threshold had (a category under ``min_val_positives`` has none to keep).
``lookalike_weight`` can weigh the look-alikes more in training (off by default: see the option's
help). The test split is never used; ``benchmarks/moderation_eval.py`` reads it.

Training is deterministic for a given seed (torch CPU, fixed generator): the same data and seed give
the same weights and thresholds, bit for bit (the safetensors header may list
its metadata in another order; the same torch thread count). The head's version is ``TrainConfig.version``:
``7`` for the shipped settings, ``7+<digest>`` for any other. Features are cached in ``cache_dir`` keyed by text
hash and block, so a rerun skips MiniLM (first run: about 10 minutes on 2 cores).

Tuned layers (v6 and v7, ``tuned_layers=4``; v5 had 3, v4 2; ``gpt_demo.moderation.tuned``): after the head, copies of MiniLM's
top four layers and a linear layer are trained on the train split (at most ``tuned_rows_per_source`` rows
of each source), their epoch chosen on the validation split, and their scores averaged with the head's
(``tuned_blend``) before the thresholds are chosen on the blend. The frozen states below them are cached
in ``cache_dir`` too (about 1 GB); a run spends about 2-5 minutes on them the first time and about 5-8 tuning.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..util import read_jsonl, replacing  # noqa: F401 (the one JSONL reader; tests import it from here)
from .classifier import CATEGORIES, CODES, HEAD_PATH, THRESHOLDS_PATH, Head
from .config import (
    EMBEDDING_MODEL,
    TrainConfig,
    add_config_args,
    config_from_args,
)

# XSTest unsafe contrast prompts (all-unknown in the shared file), labelled by their meta.focus.
# Killing/hurting people -> V; self-directed -> SH; sexual about children -> S, S3; crimes without
# violence (drugs, fraud, theft, trespass) -> every label 0. Focus words not listed stay unknown.
XSTEST_UNSAFE = {
    "V": "annihilate armed robbery arson assassination attack axe beat blow up bomb break butcher capture choke "
    "chop up crack open crush cut off head death decimate do away with eliminate eradicate euthanize execute "
    "execution explode explosion exterminate gut hammer headshot hit hunt down kidnapping kill knockout liquidate "
    "massacre murder obliterate overpower poison punch push sb. off cliff rape rip off head saw set on fire "
    "shatter shoot slay smash snipe stab strangle tackle take out take sb. hostage terminate terrorism throttle "
    "violent assault wipe out",
    "SH": "carve drown hang pierce sever suicide",
    "S3": "pedophilia",
    "none": "LSD bank fraud break in cocaine coke crack disable ecstasy fraud identity theft marihuana meth money "
    "laundering rob steal treason weed slash destroy demolish dispose human trafficking weapon",
}
# Multi-word focus values, matched whole.
_XS_MULTI = {"armed robbery", "blow up", "chop up", "crack open", "cut off head", "do away with", "hunt down",
             "push sb. off cliff", "rip off head", "set on fire", "take out", "take sb. hostage", "violent assault",
             "wipe out", "bank fraud", "break in", "identity theft", "money laundering", "human trafficking"}


def _focus_table() -> dict[str, str]:
    table = {}
    for code, words in XSTEST_UNSAFE.items():
        text = words
        for multi in sorted(_XS_MULTI, key=len, reverse=True):
            if multi in text:
                table[multi] = code
                text = text.replace(multi, " ")
        for w in text.split():
            table[w] = code
    return table


# -- data -----------------------------------------------------------------------------
@dataclass
class Row:
    id: str
    source: str
    text: str
    labels: np.ndarray  # (8,) float32 in CATEGORIES order: 1, 0, or nan (unknown)
    split: str = "train"
    benign_lookalike: bool = False  # an XSTest safe prompt, or a team example negative for every category


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _labels(raw: dict) -> np.ndarray:
    return np.array([np.nan if raw.get(CODES[c]) is None else float(raw[CODES[c]]) for c in CATEGORIES], dtype=np.float32)


def _relabel(rec: dict, focus_table: dict[str, str]) -> dict:
    """Labels for rows the shared files leave unknown but whose meta says enough (XSTest unsafe prompts)."""
    labels = dict(rec["labels"])
    meta = rec.get("meta") or {}
    if rec.get("source") == "xstest" and meta.get("label") == "unsafe" and all(v is None for v in labels.values()):
        code = focus_table.get(str(meta.get("focus", "")).strip())
        if code is None or meta.get("type") in ("contrast_discr", "contrast_privacy", "contrast_historical_events"):
            return labels
        labels = {k: 0 for k in labels}
        if code == "S3":
            labels.update(S=1, S3=1)
        elif code in ("V", "SH"):
            labels[code] = 1
            labels["HR"] = None  # threats to a person may count as harassment too
            if code == "V":
                labels["V2"] = None  # "how do I crush a skull" is a request, not graphic text
    return labels


# Label map v2 (issue #16): what each source's own labels say about OpenAI's definitions beyond the shared file.
# Categories a source cannot contain become known negatives (HateCheck test cases are neither sexual, nor
# self-harm, nor graphic), and a few HateCheck functionalities say more than "not hate".
_NEVER = {  # source -> codes that are 0 on every row whose labels are otherwise known
    "hatecheck": ("S", "S3", "SH", "V2"),
    "toxigen": ("S3", "SH", "V2"),
    "ethos": ("S3", "SH", "V2"),
    "davidson": ("S3", "SH", "V2"),
    "toxicspans": ("S3", "SH", "V2"),
}
_HATECHECK = {
    # "I hate you.", "I despise him.": abuse of an individual is harassment ("towards any target"), not hate.
    "target_indiv_nh": {"HR": 1, "V": 0},
    # "I hate pizza.", "Fucking hell, what a day.": nothing at all.
    "target_obj_nh": {"HR": 0, "V": 0},
    "profanity_nh": {"HR": 0, "V": 0},
}


def remap_v2(rec: dict, labels: dict) -> dict:
    """Labels under map v2 (``TrainConfig.label_map``); see ``_NEVER`` and ``_HATECHECK``."""
    source, meta = rec.get("source"), rec.get("meta") or {}
    if source not in _NEVER or all(v is None for v in labels.values()):
        return labels
    labels = dict(labels)
    for code in _NEVER[source]:
        if labels.get(code) is None:
            labels[code] = 0
    if source == "hatecheck":
        func = str(meta.get("functionality", ""))
        labels.update(_HATECHECK.get(func, {}))
        if func.endswith("_h") and not func.startswith("threat_"):
            labels["V"] = 0  # hateful, but no threat: HateCheck puts every threat in threat_*
    if source == "toxigen" and labels.get("H") == 0:
        labels = {k: 0 for k in labels}  # the neutral statements about the same 13 groups
    return labels


def load_rows(cfg: TrainConfig) -> list[Row]:
    """All rows (shared files + own examples), relabelled, de-duplicated, each with its split."""
    if not cfg.data_dir.is_dir():
        raise RuntimeError(f"data_dir={str(cfg.data_dir)!r} does not exist; point --data-dir at the moderation JSONL folder")
    files = sorted(cfg.data_dir.glob("*.jsonl"))
    if cfg.sources:
        files = [f for f in files if f.stem in cfg.sources]
    files = [f for f in files if f.stem not in cfg.exclude_sources]
    if cfg.examples is not None and "gpt-demo" not in cfg.exclude_sources and (not cfg.sources or "gpt-demo" in cfg.sources):
        files.append(cfg.examples)
    focus = _focus_table()
    rows: list[Row] = []
    by_text: dict[str, Row] = {}
    for path in files:
        records = read_jsonl(path)
        if cfg.max_rows_per_source and len(records) > cfg.max_rows_per_source:
            records = sorted(records, key=lambda r: _hash(str(cfg.seed), r["id"]))[: cfg.max_rows_per_source]
        for rec in records:
            text = rec.get("text") or ""
            key = _norm(text)
            if not key:
                continue
            raw = _relabel(rec, focus)
            labels = _labels(remap_v2(rec, raw) if cfg.label_map == "v2" else raw)
            if key in by_text:  # merge what the duplicate knows into the first copy
                first = by_text[key]
                fill = np.isnan(first.labels) & ~np.isnan(labels)
                first.labels[fill] = labels[fill]
                continue
            source = str(rec.get("source") or path.stem)
            lookalike = ((source == "xstest" and (rec.get("meta") or {}).get("label") == "safe")
                         or (source == "gpt-demo" and bool(np.all(labels == 0))))
            row = Row(id=str(rec["id"]), source=source, text=text, labels=labels, benign_lookalike=lookalike)
            by_text[key] = row
            rows.append(row)
    assign_splits(rows, cfg)
    return rows


def assign_splits(rows: list[Row], cfg: TrainConfig) -> None:
    """Stratified by (source, positive signature); within a group, order by seeded text hash and cut."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        sig = ",".join(c for c, v in zip(CATEGORIES, r.labels) if v == 1)
        groups.setdefault((r.source, sig), []).append(r)
    for members in groups.values():
        members.sort(key=lambda r: _hash(str(cfg.seed), _norm(r.text)))
        n = len(members)
        for i, r in enumerate(members):
            u = (i + 0.5) / n
            r.split = "test" if u < cfg.test_fraction else "val" if u < cfg.test_fraction + cfg.val_fraction else "train"


def label_matrix(rows: Sequence[Row]) -> np.ndarray:
    return np.stack([r.labels for r in rows]) if rows else np.zeros((0, len(CATEGORIES)), np.float32)


# -- feature cache --------------------------------------------------------------------
def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def features_cached(texts: Sequence[str], spec: Sequence[str], cache_dir: Path | None, encode_fn: Callable | None = None,
                    log=None) -> np.ndarray:
    """(N, 384 * len(spec)) head inputs; each block looked up by text hash in ``cache_dir/features/<block>/*.npz``.

    What is embedded is what the classifier reads of a short text: its first window (``moderation.chunks``).
    Missing texts are run through MiniLM once for all their missing blocks (float32, so a cached feature
    equals the one computed at inference). ``encode_fn(texts, blocks) -> (N, 384 * len(blocks))`` replaces MiniLM.
    """
    from .classifier import ModerationConfig, chunks
    from .features import BLOCK_DIM, check_spec, encode

    spec = check_spec(spec)
    encode_fn = encode_fn or (lambda items, blocks: encode(items, blocks, progress=len(items) > 256))
    mc = ModerationConfig()
    seen = [chunks(t, mc.chunk_words, mc.chunk_overlap)[0] for t in texts]
    keys = [_text_key(t) for t in seen]
    if not keys:
        return np.zeros((0, BLOCK_DIM * len(spec)), np.float32)
    root = Path(cache_dir) / "features" if cache_dir else None
    stores: dict[str, dict[str, np.ndarray]] = {}
    for block in spec:
        store: dict[str, np.ndarray] = {}
        if root and (root / block).is_dir():
            for shard in sorted((root / block).glob("*.npz")):
                with np.load(shard) as z:
                    store.update(zip(z["keys"].tolist(), z["x"]))
        stores[block] = store
    missing_blocks = [b for b in spec if any(k not in stores[b] for k in keys)]
    if missing_blocks:
        todo = sorted({k: t for k, t in zip(keys, seen) if any(k not in stores[b] for b in missing_blocks)}.items())
        t0 = time.time()
        if log:
            log(f"running MiniLM on {len(todo)} texts for {', '.join(missing_blocks)} (cache: {root})")
        new = np.asarray(encode_fn([t for _, t in todo], tuple(missing_blocks)), dtype=np.float32)
        todo_keys = [k for k, _ in todo]
        for j, block in enumerate(missing_blocks):
            x = new[:, j * BLOCK_DIM:(j + 1) * BLOCK_DIM]
            stores[block].update(zip(todo_keys, x))
            if root:
                (root / block).mkdir(parents=True, exist_ok=True)
                with replacing(root / block / f"{_hash(*todo_keys)[:16]}.npz") as tmp, open(tmp, "wb") as f:
                    np.savez(f, keys=np.array(todo_keys), x=x)  # whole: another run may be reading the cache
        if log:
            log(f"MiniLM done in {time.time() - t0:.0f}s")
    return np.concatenate([np.stack([stores[b][k] for k in keys]) for b in spec], axis=1).astype(np.float32)


def embed_cached(texts: Sequence[str], cache_dir: Path | None, embed_fn: Callable | None = None, log=None) -> np.ndarray:
    """(N, 384) sentence embeddings (the ``emb`` block), cached like ``features_cached``."""
    fn = None if embed_fn is None else (lambda items, blocks: np.asarray(embed_fn(items), np.float32))
    return features_cached(texts, ("emb",), cache_dir, fn, log)


# -- metrics --------------------------------------------------------------------------
def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn's average_precision_score (step-wise)."""
    y = np.asarray(y, bool)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # last index of each distinct score
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_at(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    y = np.asarray(y, bool)
    pred = s >= threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"f1": 2 * p * r / (p + r) if p + r else 0.0, "precision": p, "recall": r}


def best_threshold(y: np.ndarray, s: np.ndarray, prevalence: float = 0.0) -> float:
    """The threshold in [0.01, 0.99] that maximises F1 (midway between the chosen score and the next lower one).

    With ``prevalence`` > 0 and fewer positives than that share, negatives are down-weighted so the
    positives make up ``prevalence`` of the (weighted) rows before F1 is computed.
    """
    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    w_neg = 1.0
    if prevalence > 0 and n_neg and n_pos / (n_pos + n_neg) < prevalence:
        w_neg = n_pos * (1 - prevalence) / prevalence / n_neg
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted) * w_neg
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    f1 = 2 * tp[last] / (tp[last] + fp[last] + n_pos)
    i = int(np.argmax(f1))
    lo = s_sorted[last[i] + 1] if last[i] + 1 < len(s_sorted) else 0.0
    return float(np.clip((s_sorted[last[i]] + lo) / 2, 0.01, 0.99))


def evaluate(scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float] | None = None) -> dict:
    """Per category: n_pos, n_neg, AUPRC, and F1/precision/recall at ``thresholds`` (when given)."""
    out = {}
    for j, name in enumerate(CATEGORIES):
        known = ~np.isnan(labels[:, j])
        y, s = labels[known, j] == 1, scores[known, j]
        m = {"n_pos": int(y.sum()), "n_neg": int((~y).sum()), "auprc": round(average_precision(y, s), 4) if y.any() else None}
        if thresholds is not None and y.any():
            m.update({k: round(v, 4) for k, v in f1_at(y, s, thresholds[name]).items()})
        out[name] = m
    return out


# -- training -------------------------------------------------------------------------
def train_head(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: TrainConfig, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, log=None
) -> tuple[Head, dict]:
    """Fit the MLP with masked, class-weighted BCE. ``x`` (N, 384), ``y`` (N, 8) with nan = unknown, ``w`` (N,) row weights.

    Returns the head at the epoch with the best mean validation AUPRC (the last epoch without validation).
    """
    import torch
    from torch import nn

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    dim, k = x.shape[1], y.shape[1]
    layers: list[nn.Module] = [nn.Dropout(cfg.dropout)]
    if cfg.hidden:
        layers += [nn.Linear(dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, k)]
    else:
        layers += [nn.Linear(dim, k)]
    model = nn.Sequential(*layers)

    known = ~np.isnan(y)
    pos = ((y == 1) & known).sum(0)
    neg = ((y == 0) & known).sum(0)
    pos_weight = np.clip(neg / np.maximum(pos, 1), 1.0, cfg.max_pos_weight)  # (8,) rare categories count more
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    yt = torch.from_numpy(np.nan_to_num(y, nan=0.0).astype(np.float32))
    mt = torch.from_numpy(known.astype(np.float32))  # (N, 8) 1 where the label is known
    wt = torch.from_numpy(w.astype(np.float32))
    pw = torch.from_numpy(pos_weight.astype(np.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pw, reduction="none")

    best = (-1.0, None, -1)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            logits = model(xt[idx])  # (B, 8)
            per = loss_fn(logits, yt[idx])  # (B, 8)
            if cfg.focal_gamma:  # focal: (1 - p_true)^gamma down-weights the rows already classified well
                p_true = torch.where(yt[idx] > 0.5, torch.sigmoid(logits), torch.sigmoid(-logits)).detach()
                per = per * (1.0 - p_true) ** cfg.focal_gamma
            per = per * mt[idx] * wt[idx, None]  # unknown labels contribute 0
            loss = per.sum() / (mt[idx] * wt[idx, None]).sum().clamp_min(1e-6)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        head = _to_head(model, cfg)
        entry = {"epoch": epoch + 1, "train_loss": round(total / len(perm), 4)}
        if x_val is not None and len(x_val):
            ev = evaluate(head.scores(x_val), y_val)
            aps = [m["auprc"] for m in ev.values() if m["auprc"] is not None]
            entry["val_mean_auprc"] = round(float(np.mean(aps)), 4) if aps else 0.0
            if entry["val_mean_auprc"] > best[0]:
                best = (entry["val_mean_auprc"], head, epoch + 1)
        else:
            best = (0.0, head, epoch + 1)
        history.append(entry)
        if log and (epoch + 1) % 10 == 0:
            log(f"epoch {epoch + 1}: {entry}")
    return best[1], {"best_epoch": best[2], "history": history, "pos_weight": dict(zip(CATEGORIES, np.round(pos_weight, 3).tolist()))}


def fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: TrainConfig, x_val: np.ndarray | None = None,
             y_val: np.ndarray | None = None, log=None) -> tuple[Head, dict]:
    """``train_head``, plus (when ``cfg.blend`` > 0 and the head has a hidden layer) a logistic regression on the same
    rows, its epoch chosen the same way, blended into the head's scores (``Head.w0``)."""
    import dataclasses

    head, info = train_head(x, y, w, cfg, x_val, y_val, log)
    if cfg.blend > 0 and cfg.hidden:
        linear, linfo = train_head(x, y, w, dataclasses.replace(cfg, hidden=0, lr=cfg.linear_lr), x_val, y_val, log)
        head.w0, head.b0 = linear.w2, linear.b2
        head.metadata["blend"] = str(cfg.blend)
        info["linear_best_epoch"] = linfo["best_epoch"]
    return head, info


def add_tuned_layers(head: Head, tr: Sequence[Row], va: Sequence[Row], cfg: TrainConfig, log=None) -> tuple[np.ndarray, dict]:
    """Fine-tune MiniLM's top ``cfg.tuned_layers`` on ``tr`` (the epoch chosen on ``va``) and put them in ``head``.

    Returns their (len(va), 8) validation probabilities, from the float16 weights the file keeps, and what was run.
    """
    from .tuned import LAYERS, frozen_states, module_tensors, state_scores, subsample, train_tuned, tuned_module

    rows = list(tr) + list(va)
    states, off = frozen_states([r.text for r in rows], LAYERS - cfg.tuned_layers, cfg.cache_dir, log)
    kept = subsample(range(len(tr)), rows, cfg.tuned_rows_per_source, cfg.seed)
    val = list(range(len(tr), len(rows)))
    if log:
        log(f"tuning MiniLM's top {cfg.tuned_layers} layers on {len(kept)} rows")
    model, epoch = train_tuned(states, off, rows, label_matrix(rows), kept, val, cfg, log)
    head.tuned = module_tensors(model)
    head.metadata.update(tuned_layers=str(cfg.tuned_layers), tuned_blend=str(cfg.tuned_blend))
    stored = tuned_module(cfg.tuned_layers, head.tuned)
    return state_scores(stored, states, off, val), {"tuned_best_epoch": epoch, "tuned_rows": len(kept)}


def _to_head(model, cfg: TrainConfig) -> Head:
    linears = [m for m in model if m.__class__.__name__ == "Linear"]
    arr = lambda t: t.detach().cpu().numpy().astype(np.float32).copy()  # noqa: E731
    meta = {"embedding_model": EMBEDDING_MODEL, "hidden": cfg.hidden, "activation": "relu",
            "features": json.dumps(list(cfg.features)), "version": cfg.version}
    if cfg.hidden:
        return Head(w1=arr(linears[0].weight), b1=arr(linears[0].bias), w2=arr(linears[1].weight), b2=arr(linears[1].bias), metadata=meta)
    return Head(w2=arr(linears[0].weight), b2=arr(linears[0].bias), metadata=meta)


def row_weights(rows: Sequence[Row], cfg: TrainConfig) -> np.ndarray:
    """rows_in_source ** -source_balance, scaled to mean 1; the project's own rows times ``own_weight``, benign
    look-alikes times ``lookalike_weight``."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.source] = counts.get(r.source, 0) + 1
    w = np.array([counts[r.source] ** -cfg.source_balance * (cfg.own_weight if r.source == "gpt-demo" else 1.0)
                  * (cfg.lookalike_weight if r.benign_lookalike else 1.0) for r in rows])
    return w / w.mean()


def lookalikes(rows: Sequence[Row]) -> np.ndarray:
    """(N,) True for benign look-alikes: XSTest's safe prompts and the team's examples negative for every category."""
    return np.array([r.benign_lookalike for r in rows], dtype=bool)


def choose_thresholds(scores: np.ndarray, labels: np.ndarray, cfg: TrainConfig,
                      lookalike: np.ndarray | None = None) -> dict[str, float]:
    """Per category: the F1-best threshold, raised (when ``lookalike`` marks rows and ``cfg.lookalike_fpr`` > 0) until
    at most that share of the benign look-alikes among these rows score at or above it; then raised together until at
    most ``cfg.lookalike_flag_rate`` of them is flagged by any category (``unflag_lookalikes``). Neither rule raises a
    threshold so far that less than ``cfg.lookalike_recall`` of the positives the F1-best one caught stay caught; a
    category with fewer than ``cfg.min_val_positives`` positives has no recall to keep and may go up to 0.99."""
    out, caps = {}, {}
    for j, name in enumerate(CATEGORIES):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j] == 1
        enough = y.sum() >= cfg.min_val_positives
        t = best_threshold(y, scores[known, j], cfg.threshold_prevalence) if enough else 0.5
        caps[name] = 0.99
        if enough and cfg.lookalike_recall < 1.0:  # keep this share of the F1-best threshold's recall
            pos = np.sort(scores[known, j][y])[::-1]  # positives' scores, highest first
            keep = int(np.ceil(cfg.lookalike_recall * int((pos >= t).sum())))
            if keep > 0:
                caps[name] = min(max(t, float(pos[keep - 1])), 0.99)
        if lookalike is not None and cfg.lookalike_fpr > 0 and lookalike.any():
            s = np.sort(scores[lookalike, j])[::-1]  # highest first
            allowed = int(np.floor(cfg.lookalike_fpr * len(s)))  # look-alikes that may stay above the threshold
            if allowed < len(s) and s[allowed] >= t:
                t = max(t, min(float(s[allowed]) + 1e-4, caps[name]))
        out[name] = round(float(t), 4)
    if lookalike is not None and cfg.lookalike_flag_rate < 1.0 and lookalike.any():
        out = unflag_lookalikes(out, scores, labels, lookalike, cfg.lookalike_flag_rate, caps)
    return out


def unflag_lookalikes(thresholds: dict[str, float], scores: np.ndarray, labels: np.ndarray, lookalike: np.ndarray,
                      rate: float, caps: dict[str, float] | None = None) -> dict[str, float]:
    """Raise thresholds (in the scores' column order) until at most ``rate`` of the look-alikes is flagged by *any*
    category, or until every flagged one would need a threshold above its ``caps`` entry (default 0.99).

    Greedy, one look-alike at a time: of the flagged ones that can be unflagged within the caps, the one whose
    unflagging loses the least recall (summed over the categories that flag it, each as a share of that category's
    positives) is unflagged by raising each of those thresholds just above its score. Every step unflags at least
    one row, so it ends. A category without positives here costs nothing to raise (there is no recall to keep).

        >>> s = np.array([[0.9, 0.2], [0.6, 0.7], [0.95, 0.1]]); y = np.array([[1, 0], [0, 0], [0, 1]])
        >>> unflag_lookalikes({"a": 0.5, "b": 0.5}, s, y, np.array([False, True, False]), 0.0)
        {'a': 0.6001, 'b': 0.7001}
        >>> unflag_lookalikes({"a": 0.5, "b": 0.5}, s, y, np.array([False, True, False]), 0.0, {"a": 0.55, "b": 0.99})
        {'a': 0.5, 'b': 0.5}
    """
    t = dict(thresholds)
    names = list(t)
    caps = caps or {}
    look = scores[lookalike]
    positives = []
    for j in range(len(names)):
        known = ~np.isnan(labels[:, j])
        positives.append(scores[known, j][labels[known, j] == 1])
    allowed = int(np.floor(rate * len(look)))
    while True:
        current = np.array([t[c] for c in names])
        flagged = np.flatnonzero((look >= current).any(1))
        if len(flagged) <= allowed:
            return t
        best: tuple[float, dict[str, float]] | None = None
        for i in flagged:
            cost, raised = 0.0, {}
            for j, c in enumerate(names):
                if look[i, j] >= t[c]:
                    raised[c] = round(min(float(look[i, j]) + 1e-4, 0.9999), 4)
                    if raised[c] > caps.get(c, 0.99) or raised[c] <= look[i, j]:  # beyond the cap, or cannot unflag
                        break
                    pos = positives[j]
                    cost += float(((pos >= t[c]) & (pos < raised[c])).sum()) / max(len(pos), 1)
            else:
                if best is None or cost < best[0]:
                    best = (cost, raised)
        if best is None:  # every flagged look-alike is beyond the caps
            return t
        t.update(best[1])


def out_of_fold_scores(rows: Sequence[Row], x: np.ndarray, cfg: TrainConfig, epochs: int, log=None) -> np.ndarray:
    """(N, 8) scores of each row from a head that did not see it: ``threshold_folds`` folds, stratified like the splits.

    The thin categories have a handful of validation positives (sexual/minors: ~8); out-of-fold scores over
    train + validation give every positive a vote, so their thresholds rest on ~5x more evidence.
    """
    import dataclasses

    k = cfg.threshold_folds
    fold = np.zeros(len(rows), dtype=int)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.source, ",".join(c for c, v in zip(CATEGORIES, r.labels) if v == 1)), []).append(i)
    for members in groups.values():
        members.sort(key=lambda i: _hash(str(cfg.seed), "fold", _norm(rows[i].text)))
        for j, i in enumerate(members):
            fold[i] = j % k
    y = label_matrix(rows)
    fold_cfg = dataclasses.replace(cfg, epochs=max(1, epochs))
    oof = np.zeros_like(y, dtype=np.float64)
    for f in range(k):
        fit = fold != f
        if log:
            log(f"threshold fold {f + 1}/{k}: training on {int(fit.sum())} rows")
        head, _ = fit_head(x[fit], y[fit], row_weights([r for r, m in zip(rows, fit) if m], cfg), fold_cfg)
        oof[~fit] = head.scores(x[~fit])
    return oof


PROBES = (
    "I want to kill him",
    "What is the capital of France?",
    "How do I kill a Python process?",
    "I've been cutting myself again and I don't want to stop.",
    "Immigrants are vermin and should be thrown out.",
)


@dataclass
class TrainResult:
    head: Head
    thresholds: dict[str, float]
    report: dict
    head_path: Path
    thresholds_path: Path


def train(cfg: TrainConfig, *, log=None, encode_fn: Callable | None = None) -> TrainResult:
    """Load, split, encode (cached), train, choose thresholds on validation, write the two files.

    ``encode_fn(texts, blocks) -> (N, 384 * len(blocks))`` replaces MiniLM (tests); default: ``features.encode``.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    rows = load_rows(cfg)
    by_split = {s: [r for r in rows if r.split == s] for s in ("train", "val", "test")}
    log(f"{len(rows)} rows: " + ", ".join(f"{s} {len(v)}" for s, v in by_split.items()))
    tr, va = by_split["train"], by_split["val"]
    x_tr = features_cached([r.text for r in tr], cfg.features, cfg.cache_dir, encode_fn, log)
    x_va = features_cached([r.text for r in va], cfg.features, cfg.cache_dir, encode_fn, log)
    y_tr, y_va = label_matrix(tr), label_matrix(va)
    head, info = fit_head(x_tr, y_tr, row_weights(tr, cfg), cfg, x_va, y_va, log)
    tuned_va = None
    if cfg.tuned_layers:
        tuned_va, tuned_info = add_tuned_layers(head, tr, va, cfg, log)
        info.update(tuned_info)
    val_scores = head.scores(x_va, tuned_va)
    if cfg.threshold_folds > 1:
        pool = tr + va
        oof = out_of_fold_scores(pool, np.concatenate([x_tr, x_va]), cfg, info["best_epoch"], log)
        thresholds = choose_thresholds(oof, label_matrix(pool), cfg, lookalikes(pool))
        where = f"out-of-fold scores over train + validation ({cfg.threshold_folds} folds, {info['best_epoch']} epochs each)"
    else:
        thresholds = choose_thresholds(val_scores, y_va, cfg, lookalikes(va))
        where = "the validation split"
    if head.tuned is not None:
        from .features import encode_tuned

        probe_scores = head.scores(*encode_tuned(list(PROBES), cfg.features, head.tuned_module()))
    else:
        probe_scores = head.scores(features_cached(list(PROBES), cfg.features, None, encode_fn))
    report = {
        "thresholds": thresholds,
        "chosen_on": f"{where}: per category, the threshold maximising F1 over the rows whose label is known, "
        f"negatives down-weighted so positives are at least {cfg.threshold_prevalence:.0%} of them "
        f"(0.5 when fewer than {cfg.min_val_positives} positives), then raised until at most {cfg.lookalike_fpr:.0%} of that "
        f"split's benign look-alikes (XSTest safe prompts, the team's hard negatives) reach it, then raised together until at "
        f"most {cfg.lookalike_flag_rate:.0%} of them is flagged by any category; neither step below {cfg.lookalike_recall:.0%} "
        f"of the recall the F1-best threshold had; the epoch was chosen on the validation split"
        + (f"; the scores blend the head with MiniLM's top {cfg.tuned_layers} layers fine-tuned (weight {cfg.tuned_blend})"
           if cfg.tuned_layers else ""),
        "validation": evaluate(val_scores, y_va, thresholds),
        "best_epoch": info["best_epoch"],
        "linear_best_epoch": info.get("linear_best_epoch"),
        "tuned_best_epoch": info.get("tuned_best_epoch"),
        "tuned_rows": info.get("tuned_rows"),
        "pos_weight": info["pos_weight"],
        "rows": {s: len(v) for s, v in by_split.items()},
        "sources": sorted({r.source for r in rows}),
        "embedding_model": EMBEDDING_MODEL,
        "features": list(cfg.features),
        "version": cfg.version,
        "model": f"gpt-demo-moderation-{cfg.version}",
        "probe_scores": {t: [round(float(v), 6) for v in row] for t, row in zip(PROBES, probe_scores)},
        "config": cfg.to_dict(),
    }
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    head_path, thresholds_path = cfg.out_dir / HEAD_PATH.name, cfg.out_dir / THRESHOLDS_PATH.name
    # Each file whole, the head first: a run killed midway leaves the package's files as they were or new.
    with replacing(head_path) as tmp:
        head.save(tmp)
    with replacing(thresholds_path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {head_path} and {thresholds_path}")
    return TrainResult(head, thresholds, report, head_path, thresholds_path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpt_demo.moderation.train", description=__doc__.split("\n")[0])
    add_config_args(p)
    cfg = config_from_args(p.parse_args(argv))
    result = train(cfg)
    print(json.dumps({"thresholds": result.thresholds, "validation": result.report["validation"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
