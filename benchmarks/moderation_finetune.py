"""The shipped moderation recipe (MiniLM's top layers fine-tuned, blended with the v3 head), leave-one-source-out.

    .venv/bin/python benchmarks/moderation_finetune.py                     # every fold, v7 (~92 min; a first run ~5-15 min more of MiniLM)
    .venv/bin/python benchmarks/moderation_finetune.py --last-batch 3      # v6's recipe: the team's examples without batch 4
    .venv/bin/python benchmarks/moderation_finetune.py --tuned-layers 3 --last-batch 3   # v5's recipe (70-80 min)
    .venv/bin/python benchmarks/moderation_finetune.py --tuned-layers 2 --last-batch 3   # v4's recipe (41-50 min)
    .venv/bin/python benchmarks/moderation_finetune.py --sources toxigen   # one fold (~6 min)
    .venv/bin/python benchmarks/moderation_finetune.py --tuned-layers 1 --epochs 2 --rows-per-source 1000 --blend 0.3
    .venv/bin/python benchmarks/moderation_finetune.py --lookalike-weight 2   # look-alikes weigh double in all three recipes
    .venv/bin/python benchmarks/moderation_finetune.py --save-scores /tmp/v7.npz   # keep the held-out scores
    .venv/bin/python benchmarks/moderation_finetune.py --examples /tmp/mine.jsonl    # other team examples

Prints a table on stderr and exactly one JSON line on stdout.

What is tuned (``gpt_demo.moderation.tuned``, the settings ``TrainConfig``'s ``tuned_*`` defaults
unless a flag says otherwise): MiniLM's top four transformer layers (v5: three, v4: two), starting from its own weights,
plus a linear layer over the normalised mean of their output: eight logits, masked, class-weighted
BCE (positive and row weights computed as the head's, on the tuning rows, ``--lookalike-weight`` included; the same label map), AdamW with a one-cycle
schedule, the epoch with the best mean validation AUPRC kept. The layers below stay frozen, so
their output is computed once for every row and cached (``cache_dir``, float16), which makes
training several times faster than end to end on this CPU (measured: 40 texts/s end to end,
~190 with the top two layers on cached states, ~105-140 with three; on a faster host 165-170 with three, ~110-150 with four). Big sources are subsampled to 2,500 training rows
(seeded), so one fold trains on 10,000-13,000 rows.

The folds are those of ``benchmarks/moderation_eval.py``: for each public source (and the team's
examples), train on the train split of every other source, choose the epoch and the thresholds on
their validation split (``choose_thresholds``, the shipped rules), score every row of the left-out
source. Three recipes are scored on the same folds and pooled the same way: ``v3`` (the v3
head on the frozen sentence embedding, trained here again per fold: the same figures as
``moderation_eval.py --recipes v7-frozen``, or ``--recipes v3`` with ``--last-batch 3``), ``tuned`` (the fine-tuned layers alone) and ``blend`` (the shipped
recipe with the default flags, v7: their blend, weight ``--blend`` on the tuned scores, with its own thresholds chosen on the
blended validation scores).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from moderation_eval import batch, examples_to_batch, fmt, log, macro, overall  # noqa: E402

from gpt_demo.moderation import CATEGORIES  # noqa: E402
from gpt_demo.moderation.config import TrainConfig  # noqa: E402
from gpt_demo.moderation.train import (  # noqa: E402
    choose_thresholds,
    evaluate,
    features_cached,
    fit_head,
    label_matrix,
    load_rows,
    lookalikes,
    read_jsonl,
    row_weights,
)
from gpt_demo.moderation.tuned import check_tuned_path, cut_layer, frozen_states, state_scores, subsample, train_tuned  # noqa: E402

def pooled(scores, thresholds, y, src, la, sources) -> dict:
    """Per category, macro and overall AUPRC over the public held-out rows; flag rates of the unseen look-alikes."""
    public = np.isin(src, [s for s in sources if s != "gpt-demo"])
    ev = evaluate(scores[public], y[public])
    fpr = {}
    for s in ("xstest", "gpt-demo"):
        if s in thresholds:
            m = (src == s) & la
            fpr[s] = round(float(np.any(scores[m] >= thresholds[s], 1).mean()), 4)
    per_source = {}
    for s in sources:
        m = src == s
        e = evaluate(scores[m], y[m])
        per_source[s] = {c: e[c]["auprc"] for c in CATEGORIES if e[c]["n_pos"] and e[c]["n_neg"]}
    return {"pooled": {c: ev[c]["auprc"] for c in CATEGORIES}, "macro": macro(ev, "auprc"),
            "overall": overall(scores[public], y[public]), "xstest_fpr": fpr.get("xstest"),
            "gpt_demo_hard_negative_fpr": fpr.get("gpt-demo"), "per_source": per_source}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, help="moderation JSONL folder (default: ../shared/data/moderation)")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/moderation"), help="feature and frozen-state cache")
    p.add_argument("--sources", nargs="*", default=[], help="only these folds (default: every source and gpt-demo)")
    p.add_argument("--examples", type=Path, help="the team's examples (default: the shipped gpt_demo/data/moderation_examples.jsonl)")
    p.add_argument("--last-batch", type=int, metavar="N",
                   help="train on the team's examples of batches 1..N only (3: v6's data; default: all of them)")
    p.add_argument("--save-scores", type=Path, metavar="NPZ",
                   help="also write every recipe's held-out scores, the labels and the sources to this .npz, "
                        "to compare recipes afterwards without training again")
    flags = {"tuned_layers": ("--tuned-layers", int), "tuned_epochs": ("--epochs", int),
             "tuned_rows_per_source": ("--rows-per-source", int), "tuned_batch_size": ("--batch-size", int),
             "tuned_lr": ("--lr", float), "tuned_head_lr": ("--head-lr", float), "tuned_blend": ("--blend", float),
             "lookalike_weight": ("--lookalike-weight", float)}
    for name, (flag, kind) in flags.items():
        f = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
        p.add_argument(flag, dest=name, type=kind, default=f.default, help=f"{f.metadata['help']} (default: {f.default})")
    args = p.parse_args(argv)
    try:  # v7: the defaults; the head part of every recipe is v3's
        cfg = TrainConfig(cache_dir=args.cache_dir, **({"data_dir": args.data_dir} if args.data_dir else {}),
                          **({"examples": args.examples} if args.examples else {}),
                          **{name: getattr(args, name) for name in flags})
    except ValueError as exc:
        p.error(str(exc))
    if args.last_batch is not None:
        batches = sorted({batch(r) for r in read_jsonl(cfg.examples)})
        if args.last_batch not in batches:
            p.error(f"--last-batch {args.last_batch}: {cfg.examples} has batches {' '.join(map(str, batches))}")
        tmp = tempfile.TemporaryDirectory()  # lives until main returns
        cfg = dataclasses.replace(cfg, examples=examples_to_batch(cfg.examples, args.last_batch, Path(tmp.name)))
    if args.save_scores and (args.save_scores.suffix != ".npz" or not args.save_scores.parent.is_dir()):
        p.error(f"--save-scores {args.save_scores}: give a .npz path in an existing folder")
    if not cfg.tuned_layers or cfg.tuned_blend >= 1:
        p.error("--tuned-layers must be >= 1 and --blend below 1: this benchmark compares a blend with the head alone")
    import torch

    t_start = time.time()
    rows = load_rows(cfg)
    y, la = label_matrix(rows), lookalikes(rows)
    split, src = np.array([r.split for r in rows]), np.array([r.source for r in rows])
    folds = args.sources or sorted(set(src))
    unknown = sorted(set(folds) - set(src))
    if unknown:
        p.error(f"--sources {' '.join(unknown)}: no such source; choose from {' '.join(sorted(set(src)))}")
    cut = cut_layer(cfg.tuned_layers)
    texts = [r.text for r in rows]
    diff = check_tuned_path(texts[:64:3], cut)
    if diff > 1e-5:
        raise SystemExit(f"the tuned path does not reproduce MiniLM (max difference {diff:.2e}); transformers changed?")
    states, off = frozen_states(texts, cut, cfg.cache_dir, log)
    x = features_cached(texts, cfg.features, cfg.cache_dir, log=log)

    names = ("v3", "tuned", "blend")
    scores = {n: np.full(y.shape, np.nan) for n in names}
    thresholds: dict = {n: {} for n in names}
    epochs, seconds = {}, {}
    for source in folds:
        t0 = time.time()
        tr = np.where((split == "train") & (src != source))[0]
        va = np.where((split == "val") & (src != source))[0]
        held = np.where(src == source)[0]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the small head, as benchmarks/moderation_eval.py trains it
        head, _ = fit_head(x[tr], y[tr], row_weights([rows[i] for i in tr], cfg), cfg, x[va], y[va])
        torch.set_num_threads(threads)
        kept = subsample(tr.tolist(), rows, cfg.tuned_rows_per_source, cfg.seed)
        log(f"  without {source}: tuning on {len(kept)} rows")
        model, epochs[source] = train_tuned(states, off, rows, y, kept, va.tolist(), cfg, log)
        val = {"v3": head.scores(x[va]), "tuned": state_scores(model, states, off, va)}
        val["blend"] = cfg.tuned_blend * val["tuned"] + (1 - cfg.tuned_blend) * val["v3"]
        out = {"v3": head.scores(x[held]), "tuned": state_scores(model, states, off, held)}
        out["blend"] = cfg.tuned_blend * out["tuned"] + (1 - cfg.tuned_blend) * out["v3"]
        for n in names:
            th = choose_thresholds(val[n], y[va], cfg, lookalikes([rows[i] for i in va]))
            thresholds[n][source] = np.array([th[c] for c in CATEGORIES])
            scores[n][held] = out[n]
        seconds[source] = round(time.time() - t0)
        m = src == source
        fold = {n: evaluate(scores[n][m], y[m]) for n in names}
        log(f"  without {source} ({seconds[source]}s): " + "; ".join(
            f"{n} " + ", ".join(f"{c} {e[c]['auprc']}" for c in CATEGORIES if e[c]["n_pos"] and e[c]["n_neg"])
            for n, e in fold.items()))

    report = {"benchmark": "moderation_finetune", "folds": folds, **{name: getattr(cfg, name) for name in flags},
              "examples": str(args.examples or "shipped"), "last_batch": args.last_batch,
              "examples_sha256": hashlib.sha256(Path(cfg.examples).read_bytes()).hexdigest(),
              "best_epoch": epochs, "fold_seconds": seconds,
              "threads": torch.get_num_threads(), "check_tuned_path_max_diff": diff}
    report.update({n: pooled(scores[n], thresholds[n], y, src, la, folds) for n in names})
    report["seconds"] = round(time.time() - t_start, 1)
    if args.save_scores:
        np.savez_compressed(args.save_scores, y=y, source=src, split=split, lookalike=la,
                            **{f"scores_{n}": scores[n] for n in names},
                            **{f"thresholds_{n}_{s}": t for n in names for s, t in thresholds[n].items()})
    log("\nleave-one-source-out AUPRC (pooled over the public sources in --sources)")
    log("| category | " + " | ".join(names) + " |")
    for c in CATEGORIES:
        log(f"| {c} | " + " | ".join(fmt(report[n]["pooled"][c]) for n in names) + " |")
    for key in ("macro", "overall", "xstest_fpr", "gpt_demo_hard_negative_fpr"):
        log(f"| {key} | " + " | ".join(fmt(report[n][key]) for n in names) + " |")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
