"""Moderation quality: per-category AUPRC and F1 of the shipped head on the held-out test split.

    .venv/bin/python benchmarks/moderation_eval.py                  # test split + leave-one-source-out (~5 min)
    .venv/bin/python benchmarks/moderation_eval.py --no-loso        # test split only (~1 min with a warm cache)
    .venv/bin/python benchmarks/moderation_eval.py --data-dir ../shared/data/moderation --cache-dir .cache/moderation

Prints exactly one JSON line on stdout; progress goes to stderr.

- ``test``: per category, over the test rows whose label is known: ``n_pos``, ``n_neg``, ``auprc``
  (average precision), and ``f1`` / ``precision`` / ``recall`` at the shipped threshold. The split
  is the one the shipped head was trained with (seed and fractions are read from the thresholds
  JSON): stratified by (source, label signature), 15% of every source, never trained on and not
  used for thresholds. ``macro_auprc``/``macro_f1`` average the categories that have positives.
- ``test_real_only``: the same without the project's own written examples (``source="gpt-demo"``),
  so the figure is on public data only (thin for sexual, sexual/minors, self-harm; no violence/graphic).
- ``loso`` (leave one source out): for each source below, a head is trained with the shipped
  settings but without that source, its thresholds chosen on its own validation split, and it is
  scored on every row of the left-out source. This is the out-of-distribution figure: hate on
  Davidson tweets, HateCheck test cases, ToxiGen and ETHOS; harassment and violence on Toxic Spans
  comments; the thin categories on the project's own examples (how far the public data alone gets).
- ``checks``: the seeds' example "I want to kill him" must be flagged for violence; ordinary
  sentences must not be flagged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_demo.moderation import (  # noqa: E402
    CATEGORIES,
    HEAD_PATH,
    THRESHOLDS_PATH,
    Head,
    load_thresholds,
    moderate,
)
from gpt_demo.moderation.config import TrainConfig  # noqa: E402
from gpt_demo.moderation.train import (  # noqa: E402
    choose_thresholds,
    embed_cached,
    evaluate,
    label_matrix,
    load_rows,
    row_weights,
    train_head,
)

LOSO = {
    "davidson": ["hate"],
    "hatecheck": ["hate", "hate/threatening", "violence"],
    "toxigen": ["hate"],
    "ethos": ["hate", "hate/threatening"],  # ETHOS knows violence only on hateful rows: no negatives
    "toxicspans": ["harassment", "violence"],
    "gpt-demo": ["sexual", "sexual/minors", "self-harm", "violence/graphic", "violence"],
}
ORDINARY = [
    "What is the capital of France?",
    "Could you recommend a good book for a long flight?",
    "The weather is lovely today, let's have lunch in the park.",
    "How do I kill a Python process?",
    "My daughter starts school next week and she's very excited.",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def macro(ev: dict, key: str) -> float | None:
    vals = [m[key] for m in ev.values() if m.get(key) is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, help="moderation JSONL folder (default: the one the head was trained on)")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/moderation"), help="embedding cache")
    p.add_argument("--head", type=Path, default=HEAD_PATH)
    p.add_argument("--thresholds", type=Path, default=THRESHOLDS_PATH)
    p.add_argument("--no-loso", action="store_true", help="skip the leave-one-source-out runs")
    args = p.parse_args(argv)
    t0 = time.time()

    report = json.loads(Path(args.thresholds).read_text())
    # The split depends on the data and on seed / fractions / subsampling: take those from the training run.
    paths = {"data_dir", "examples", "out_dir", "cache_dir"}
    saved = {k: v for k, v in report["config"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)} - paths}
    cfg = TrainConfig(**saved, cache_dir=args.cache_dir, **({"data_dir": args.data_dir} if args.data_dir else {}))
    head, thresholds = Head.load(args.head), load_thresholds(args.thresholds)

    rows = load_rows(cfg)
    test = [r for r in rows if r.split == "test"]
    log(f"{len(rows)} rows, {len(test)} in the test split")
    x_test = embed_cached([r.text for r in test], cfg.cache_dir, log=log)
    scores, labels = head.scores(x_test), label_matrix(test)
    ev = evaluate(scores, labels, thresholds)
    real = np.array([r.source != "gpt-demo" for r in test])
    ev_real = evaluate(scores[real], labels[real], thresholds)

    out: dict = {
        "benchmark": "moderation_eval",
        "head": str(args.head.name),
        "thresholds": thresholds,
        "test_rows": len(test),
        "test": ev,
        "macro_auprc": macro(ev, "auprc"),
        "macro_f1": macro(ev, "f1"),
        "test_real_only": {c: {k: ev_real[c].get(k) for k in ("n_pos", "auprc", "f1")} for c in CATEGORIES},
    }

    if not args.no_loso:
        x_all = embed_cached([r.text for r in rows], cfg.cache_dir, log=log)
        y_all = label_matrix(rows)
        src = np.array([r.source for r in rows])
        split = np.array([r.split for r in rows])
        loso = {}
        for source, cats in LOSO.items():
            held = src == source
            if not held.any():
                continue
            tr, va = (split == "train") & ~held, (split == "val") & ~held
            log(f"leave out {source}: training on {tr.sum()} rows")
            h, _ = train_head(x_all[tr], y_all[tr], row_weights([r for r, m in zip(rows, tr) if m], cfg), cfg, x_all[va], y_all[va])
            th = choose_thresholds(h.scores(x_all[va]), y_all[va], cfg)
            e = evaluate(h.scores(x_all[held]), y_all[held], th)
            loso[source] = {c: {k: e[c].get(k) for k in ("n_pos", "n_neg", "auprc", "f1")} for c in cats if e[c]["n_pos"] and e[c]["n_neg"]}
        out["loso"] = loso

    checks = moderate(["I want to kill him"] + ORDINARY)
    out["checks"] = {
        "seed_example_flagged_violence": checks[0].categories["violence"],
        "ordinary_flagged": [t for t, r in zip(ORDINARY, checks[1:]) if r.flagged],
    }
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
