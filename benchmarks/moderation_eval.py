"""Moderation quality on sources held out from training, the test split, false positives and latency.

    .venv/bin/python benchmarks/moderation_eval.py                    # everything (~5 min on 2 cores, first run ~10 min more for MiniLM)
    .venv/bin/python benchmarks/moderation_eval.py --no-loso          # test split, false positives, latency (~2 min with a warm cache)
    .venv/bin/python benchmarks/moderation_eval.py --recipes v2 > v2.json & .venv/bin/python benchmarks/moderation_eval.py --recipes v3 > v3.json   # both, on 2 cores
    .venv/bin/python benchmarks/moderation_eval.py --recipes v1 v2 v3 # the first head's recipe too
    .venv/bin/python benchmarks/moderation_eval.py --recipes v3 v7-frozen   # the team's batch 4 measured: v3 beside v3 + batch 4, v7's frozen half (~15 min)
    .venv/bin/python benchmarks/moderation_eval.py --recipes v7-frozen candidate --examples /tmp/mine.jsonl   # other team examples beside the shipped ones
    .venv/bin/python benchmarks/moderation_finetune.py                # the shipped (v7) recipe's leave-one-source-out (~92 min)
    .venv/bin/python benchmarks/moderation_eval.py --data-dir ../shared/data/moderation --cache-dir .cache/moderation
    .venv/bin/python benchmarks/moderation_eval.py --no-loso --head /tmp/v6.safetensors --thresholds /tmp/v6.json   # another head file (v6's: git show c9da6e3:...)

Prints a table on stderr and exactly one JSON line on stdout.

- ``loso`` (the headline; leave one source out): for each public source in the data folder, a head is
  trained with a recipe's settings on the train split of every *other* source plus the team's
  examples (epoch chosen, thresholds placed on their validation split) and scored on *all* rows of the
  left-out source. Every public row thus gets a score from a head that never saw its source; pooled
  over the sources, per category AUPRC, ``macro`` (the categories with public positives; no public
  source has a violence/graphic positive) and ``overall`` (unsafe = any category positive, safe = every
  label a known 0; score = the highest category score). ``per_source`` has each source's own figures
  and ``gpt-demo`` the run that leaves the team's examples out (the only violence/graphic positives).
  Recipes run on the same rows and the same (v2) labels: ``v1`` the first head (the sentence
  embedding alone, label map v1, the first 510 team examples), ``v2`` the second (label map v2,
  the MLP + logistic-regression blend, the per-category look-alike rule, the team's examples of
  batches 1-2), ``v3`` the frozen-embedding head (v2 plus the team's batch 3 and at most ``lookalike_flag_rate``
  of the validation look-alikes flagged by any category), ``v7-frozen`` the frozen half of the shipped head (v3 plus the
  team's batch 4: ``TrainConfig(tuned_layers=0)``), ``candidate`` v7-frozen's settings with the team examples of ``--examples``
  (the public folds train on them; the team fold still scores the shipped examples, so both recipes score the same rows). The shipped v7 recipe also fine-tunes MiniLM's top four layers
  in every fold, which takes ~92 minutes: ``benchmarks/moderation_finetune.py`` runs its folds, beside the frozen half's. ``xstest_fpr`` is the share of XSTest's
  250 safe prompts flagged by the head that never saw XSTest, at that head's thresholds.
- ``test``: the shipped head (and the v3 one kept beside it, ``moderation_head_v3.safetensors``) on the held-out test
  split of the shipped run (seed and fractions from the thresholds JSON; 15 % of every (source, label)
  group, never trained on, not used for thresholds): AUPRC, F1 / precision / recall at the shipped thresholds.
- ``false_positives``: flagged share of XSTest's safe prompts (all 250; 70 % are in the train split, so
  the LOSO figure is the honest one), of the team's hard negatives in the test split, and of ``ORDINARY``.
- ``latency``: median ms for one short text at batch 1 (``moderate(text)``, tokenizer included), and
  texts/s for 256 short texts in one call.
- ``--forward int8`` (or ``transformers``) runs the test split, the false positives and latency with MiniLM's
  layers run that way (``ModerationConfig.forward``; the default ``lean`` gives transformers' numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_demo.moderation import (  # noqa: E402
    CATEGORIES,
    DATA_DIR,
    HEAD_PATH,
    THRESHOLDS_PATH,
    Head,
    ModerationConfig,
    Moderator,
    load_thresholds,
)
from gpt_demo.moderation.config import EXAMPLES_PATH, TrainConfig  # noqa: E402
from gpt_demo.moderation.features import FORWARDS, encode, encode_tuned  # noqa: E402
from gpt_demo.moderation.train import (  # noqa: E402
    average_precision,
    choose_thresholds,
    evaluate,
    features_cached,
    label_matrix,
    load_rows,
    lookalikes,
    read_jsonl,
    row_weights,
    fit_head,
)

PREVIOUS_HEAD = DATA_DIR / "moderation_head_v3.safetensors"  # the head before this one, kept for comparison
PREVIOUS_THRESHOLDS = DATA_DIR / "moderation_thresholds_v3.json"
ORDINARY = [
    "What is the capital of France?",
    "Could you recommend a good book for a long flight?",
    "The weather is lovely today, let's have lunch in the park.",
    "How do I kill a Python process?",
    "My daughter starts school next week and she's very excited.",
]
SHORT = [  # latency probes: short chat-like texts
    "I want to kill him", "What is the capital of France?", "How do I kill a Python process?",
    "You are an idiot and everyone hates you.", "Can you give me a recipe for vegetable lasagna?",
    "The meeting has been moved to Tuesday afternoon.", "I've been feeling really low lately.",
    "Write a poem about the sea at night.",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def macro(ev: dict, key: str) -> float | None:
    vals = [m[key] for m in ev.values() if m.get(key) is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def overall(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Unsafe (any category 1) vs safe (every label a known 0) AUPRC, the score being the highest category score."""
    unsafe, safe = np.any(labels == 1, 1), np.all(labels == 0, 1)
    keep = unsafe | safe
    return round(average_precision(unsafe[keep], scores[keep].max(1)), 4) if unsafe[keep].any() else None


def batch(row: dict) -> int:
    """When a team example was written (``meta.batch``; rows without one are batch 1)."""
    return (row.get("meta") or {}).get("batch", 1)


def examples_to_batch(examples: Path, last_batch: int, tmp: Path) -> Path:
    """A copy of ``examples`` in ``tmp`` with the rows of batches 1..``last_batch`` only, in their order."""
    path = tmp / f"moderation_examples_to_batch_{last_batch}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(examples) if batch(r) <= last_batch))
    return path


def recipes(base: TrainConfig, tmp: Path, candidate: Path | None = None) -> dict[str, TrainConfig]:
    """``v1``: the first head (features, label map, team examples of batch 1); ``v2``: the second head (batches 1-2,
    the per-category look-alike rule only, look-alikes weighted like any row); ``v3``: the frozen-embedding head (the shipped
    examples of batches 1-3, without tuned layers); ``v7-frozen``: the shipped defaults without tuned layers, so v3 plus the
    team's batch 4 (insults of commenters, public figures and non-protected groups, and civil criticism of them);
    ``candidate`` (only with a ``candidate`` file): v7-frozen with those team examples instead. None tunes MiniLM: ``moderation_finetune.py`` measures that."""
    base = dataclasses.replace(base, tuned_layers=0, examples=base.examples or EXAMPLES_PATH)

    def examples(last_batch: int) -> Path:
        return examples_to_batch(base.examples, last_batch, tmp)

    v1 = dataclasses.replace(base, features=("emb",), label_map="v1", examples=examples(1), focal_gamma=0.0, hidden=256, blend=0.0,
                             lookalike_fpr=0.0, threshold_folds=5, lookalike_flag_rate=1.0, lookalike_weight=1.0)
    v2 = dataclasses.replace(base, examples=examples(2), lookalike_flag_rate=1.0, lookalike_weight=1.0)
    out = {"v1": v1, "v2": v2, "v3": dataclasses.replace(base, examples=examples(3)), "v7-frozen": base}
    if candidate is not None:
        out["candidate"] = dataclasses.replace(base, examples=candidate)
    return out


def loso(cfg: TrainConfig, eval_rows, x_cache, name: str) -> dict:
    """Leave each source out in turn; every held-out row scored by the head that never saw its source."""
    rows = load_rows(cfg)
    x = x_cache(rows, cfg.features)
    y, src, split = label_matrix(rows), np.array([r.source for r in rows]), np.array([r.split for r in rows])
    ye = label_matrix(eval_rows)
    xe = x_cache(eval_rows, cfg.features)
    esrc = np.array([r.source for r in eval_rows])
    pooled = np.zeros(ye.shape, dtype=np.float64)
    per_source, fpr = {}, {}
    for source in sorted(set(esrc)):
        tr, va = (split == "train") & (src != source), (split == "val") & (src != source)
        t0 = time.time()
        head, _ = fit_head(x[tr], y[tr], row_weights([r for r, m in zip(rows, tr) if m], cfg), cfg, x[va], y[va])
        th = choose_thresholds(head.scores(x[va]), y[va], cfg, lookalikes([r for r, m in zip(rows, va) if m]))
        held = esrc == source
        scores = head.scores(xe[held])
        pooled[held] = scores
        ev = evaluate(scores, ye[held], th)
        per_source[source] = {c: {k: ev[c].get(k) for k in ("n_pos", "n_neg", "auprc", "f1")}
                              for c in CATEGORIES if ev[c]["n_pos"] and ev[c]["n_neg"]}
        safe = lookalikes([r for r, m in zip(eval_rows, held) if m])
        if source in ("xstest", "gpt-demo") and safe.any():
            flagged = np.any(scores >= np.array([th[c] for c in CATEGORIES]), 1)
            fpr[source] = round(float(flagged[safe].mean()), 4)
        log(f"  {name} without {source}: " + ", ".join(f"{c} {m['auprc']}" for c, m in per_source[source].items())
            + f" ({time.time() - t0:.0f}s)")
    public = esrc != "gpt-demo"
    ev = evaluate(pooled[public], ye[public])
    return {
        "pooled": {c: ev[c]["auprc"] for c in CATEGORIES},
        "macro": macro(ev, "auprc"),
        "overall": overall(pooled[public], ye[public]),
        "per_source": per_source,
        "xstest_fpr": fpr.get("xstest"),
        "gpt_demo_hard_negative_fpr": fpr.get("gpt-demo"),
    }


def latency(moderator: Moderator) -> dict:
    moderator.moderate(SHORT)  # warm up: MiniLM loaded, first-call allocations done
    times = []
    for _ in range(5):
        for text in SHORT:
            t0 = time.perf_counter()
            moderator.moderate(text)
            times.append((time.perf_counter() - t0) * 1000)
    batch = [SHORT[i % len(SHORT)] + f" ({i})" for i in range(256)]
    t0 = time.perf_counter()
    moderator.moderate(batch)
    return {"batch1_ms_median": round(float(np.median(times)), 2), "batch1_ms_p90": round(float(np.percentile(times, 90)), 2),
            "batch_texts_per_s": round(len(batch) / (time.perf_counter() - t0), 1)}


def test_split(head: Head, thresholds: dict, test, x_cache, forward: str = "lean") -> dict:
    """One MiniLM pass per text as in training (no windows); a head with tuned layers gets their view too (not cached).

    ``forward`` other than ``lean`` runs the features live that way (``ModerationConfig.forward``) instead of the cache."""
    if head.tuned is not None:
        scores = head.scores(*encode_tuned([r.text for r in test], head.features, head.tuned_module(), forward=forward))
    elif forward != "lean":
        scores = head.scores(encode([r.text for r in test], head.features, forward=forward))
    else:
        scores = head.scores(x_cache(test, head.features))
    labels = label_matrix(test)
    ev = evaluate(scores, labels, thresholds)
    return {"per_category": ev, "macro_auprc": macro(ev, "auprc"), "macro_f1": macro(ev, "f1"),
            "overall": overall(scores, labels), "scores": scores}


def fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, help="moderation JSONL folder (default: the one the head was trained on)")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/moderation"), help="feature cache")
    p.add_argument("--head", type=Path, default=HEAD_PATH, help="head file for the test split, false positives and latency (default: the shipped one)")
    p.add_argument("--thresholds", type=Path, default=THRESHOLDS_PATH, help="its thresholds JSON (default: the shipped one)")
    p.add_argument("--no-loso", action="store_true", help="skip the leave-one-source-out runs")
    p.add_argument("--forward", default="lean", choices=FORWARDS,
                   help="how MiniLM's layers run for the test split, false positives and latency (ModerationConfig.forward)")
    p.add_argument("--recipes", nargs="*", default=["v7-frozen"], choices=["v1", "v2", "v3", "v7-frozen", "candidate"],
                   help="LOSO recipes to run (v7-frozen: the shipped defaults without tuned layers, v3 plus the team's batch 4; "
                        "candidate: v7-frozen with the team examples of --examples)")
    p.add_argument("--examples", type=Path, help="team examples JSONL for the candidate recipe (the shipped file's format)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training the LOSO heads")
    args = p.parse_args(argv)
    if ("candidate" in args.recipes) != (args.examples is not None):
        p.error("--recipes candidate and --examples FILE go together")
    if args.examples is not None and not args.examples.is_file():
        p.error(f"--examples {args.examples}: no such file")
    t0 = time.time()

    report = json.loads(Path(args.thresholds).read_text())
    paths = {"data_dir", "examples", "out_dir", "cache_dir"}
    saved = {k: (tuple(v) if isinstance(v, list) else v) for k, v in report["config"].items()
             if k in {f.name for f in dataclasses.fields(TrainConfig)} - paths}
    cfg = TrainConfig(**saved, cache_dir=args.cache_dir, **({"data_dir": args.data_dir} if args.data_dir else {}))

    def x_cache(rows, spec):
        return features_cached([r.text for r in rows], spec, cfg.cache_dir, log=log)

    rows = load_rows(cfg)
    test = [r for r in rows if r.split == "test"]
    log(f"{len(rows)} rows, {len(test)} in the test split")
    loso_out = {}
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # many small heads: one thread each, no oversubscription beside other jobs
    if not args.no_loso:  # first: it reads no shipped file, so a retrained head can be put in place meanwhile
        eval_rows = load_rows(dataclasses.replace(cfg, label_map="v2"))
        with tempfile.TemporaryDirectory() as tmp:
            all_recipes = recipes(cfg, Path(tmp), args.examples)
            for name in args.recipes:
                log(f"leave-one-source-out, recipe {name}")
                loso_out[name] = loso(all_recipes[name], eval_rows, x_cache, name)
    torch.set_num_threads(threads)  # latency below is measured with the default threads
    head, thresholds = Head.load(args.head), load_thresholds(args.thresholds)
    out: dict = {"benchmark": "moderation_eval", "head": args.head.name, "model": f"gpt-demo-moderation-{head.version}", "forward": args.forward,
                 "features": list(head.features), "thresholds": thresholds, "test_rows": len(test), "test": {}}
    heads = {f"v{head.version}": (head, thresholds)}
    if PREVIOUS_HEAD.is_file() and args.head == HEAD_PATH:
        heads["v3"] = (Head.load(PREVIOUS_HEAD), load_thresholds(PREVIOUS_THRESHOLDS))
    labels = label_matrix(test)
    for name, (h, th) in heads.items():
        t = test_split(h, th, test, x_cache, args.forward)
        scores = t.pop("scores")
        out["test"][name] = t
        if h is head:
            real = np.array([r.source != "gpt-demo" for r in test])
            ev_real = evaluate(scores[real], labels[real], th)
            out["test_real_only"] = {c: {k: ev_real[c].get(k) for k in ("n_pos", "auprc", "f1")} for c in CATEGORIES}

    # False positives of the shipped classifier, through moderate() itself (windows, thresholds and all).
    fp = {}
    xs = [r for r in rows if r.source == "xstest" and r.benign_lookalike]
    hard = [r for r in test if r.source == "gpt-demo" and r.benign_lookalike]

    def flag_rate(mod, texts):
        flagged = [r.flagged for i in range(0, len(texts), 200) for r in mod.moderate(texts[i:i + 200])]
        return round(float(np.mean(flagged)), 4) if flagged else None

    for name, (h, th) in heads.items():
        mod = Moderator(h, th, ModerationConfig(forward=args.forward))
        fp[name] = {
            "xstest_safe": flag_rate(mod, [r.text for r in xs]),
            "xstest_safe_test_split": flag_rate(mod, [r.text for r in xs if r.split == "test"]),
            "team_hard_negatives_test_split": flag_rate(mod, [r.text for r in hard]),
            "ordinary_flagged": [t for t, r in zip(ORDINARY, mod.moderate(ORDINARY)) if r.flagged],
        }
    out["false_positives"] = fp
    out["n"] = {"xstest_safe": len(xs), "xstest_safe_test_split": sum(r.split == "test" for r in xs), "team_hard_negatives_test_split": len(hard)}
    out["latency"] = latency(Moderator(head, thresholds, ModerationConfig(forward=args.forward)))
    mod = Moderator(head, thresholds)
    out["checks"] = {"seed_example_flagged_violence": mod.moderate("I want to kill him").categories["violence"]}

    if loso_out:
        out["loso"] = loso_out
        if args.examples is not None:
            out["candidate_examples"] = str(args.examples)

    out["seconds"] = round(time.time() - t0, 1)
    table(out)
    print(json.dumps(out))
    return 0


def table(out: dict) -> None:
    lo = out.get("loso", {})
    names = [n for n in ("v1", "v2", "v3", "v7-frozen", "candidate") if n in lo]
    if names:
        log("\nleave-one-source-out AUPRC (pooled over the public sources)")
        log("| category | " + " | ".join(names) + " |")
        for c in CATEGORIES:
            log(f"| {c} | " + " | ".join(fmt(lo[n]["pooled"][c]) for n in names) + " |")
        for key in ("macro", "overall", "xstest_fpr", "gpt_demo_hard_negative_fpr"):
            log(f"| {key} | " + " | ".join(fmt(lo[n][key]) for n in names) + " |")
    log("\ntest split: AUPRC / F1 at the shipped thresholds")
    for name, t in out["test"].items():
        log(f"{name}: " + ", ".join(f"{c} {fmt(m['auprc'])}/{fmt(m.get('f1'))}" for c, m in t["per_category"].items())
            + f"; macro {fmt(t['macro_auprc'])}/{fmt(t['macro_f1'])}, overall {fmt(t['overall'])}")
    log(f"false positives: {out['false_positives']}")
    log(f"latency: {out['latency']}")


if __name__ == "__main__":
    sys.exit(main())
