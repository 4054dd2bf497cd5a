"""Latency of the shipped moderation head beside another head file (or its other forward), measured in turns in one process.

    git show c9da6e3:gpt_demo/data/moderation_head.safetensors > /tmp/v6.safetensors   # v6 (v5: d87ac49, v4: 84d9cc5)
    git show c9da6e3:gpt_demo/data/moderation_thresholds.json > /tmp/v6.json
    .venv/bin/python benchmarks/moderation_latency.py --other /tmp/v6.safetensors /tmp/v6.json --rounds 6
    .venv/bin/python benchmarks/moderation_latency.py --forward lean transformers --rounds 6   # the shipped head, two ways
    .venv/bin/python benchmarks/moderation_latency.py --forward int8 lean --rounds 6

Prints exactly one JSON line: for each head (or, with ``--forward``, for each of the two ways of running
MiniLM's layers, ``ModerationConfig.forward``: ``lean``, the default, ``int8`` or ``transformers``), ``moderation_eval.latency`` (median ms of one short text at
batch 1, tokenizer included, and texts/s for 256 texts in one call) once per round, the median over the
rounds, and the ratio to the other head. The heads take turns (ABBA order), so a host that slows down
mid-run weighs on both alike: only the ratio compares across hosts, which differ about 2x in speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from moderation_eval import latency  # noqa: E402

from gpt_demo.moderation import ModerationConfig, Moderator  # noqa: E402
from gpt_demo.moderation.classifier import HEAD_PATH, THRESHOLDS_PATH, Head, load_thresholds  # noqa: E402
from gpt_demo.moderation.features import FORWARDS  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--other", nargs=2, type=Path, metavar=("HEAD", "THRESHOLDS"),
                       help="the head file and thresholds JSON to compare with the shipped ones")
    which.add_argument("--forward", nargs=2, choices=FORWARDS, metavar="FORWARD",
                       help=f"compare two ways the shipped head runs MiniLM's layers ({', '.join(FORWARDS)}; "
                            "ModerationConfig.forward), e.g. --forward lean transformers")
    p.add_argument("--rounds", type=int, default=6, help="turns per head (default: 6; 1 to 50)")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 50:
        p.error(f"--rounds {args.rounds}: give 1 to 50")
    heads = {}
    if args.forward:
        head, thresholds = Head.load(HEAD_PATH), load_thresholds(THRESHOLDS_PATH)
        if args.forward[0] == args.forward[1]:
            p.error("--forward: give two different forwards")
        for forward in args.forward:
            heads[f"gpt-demo-moderation-{head.version} ({forward})"] = Moderator(head, thresholds, ModerationConfig(forward=forward))
    else:
        for path in args.other:
            if not path.is_file():
                p.error(f"--other {path}: no such file")
        for head_path, thresholds_path in ((HEAD_PATH, THRESHOLDS_PATH), tuple(args.other)):
            head = Head.load(head_path)
            heads[f"gpt-demo-moderation-{head.version}"] = Moderator(head, load_thresholds(thresholds_path))
        if len(heads) < 2:
            p.error("--other is the shipped head's version; give another head file")
    runs: dict[str, list] = {name: [] for name in heads}
    for i in range(args.rounds):
        for name in (list(heads) if i % 2 == 0 else list(heads)[::-1]):
            runs[name].append(latency(heads[name]))
    out: dict = {"benchmark": "moderation_latency", "rounds": args.rounds, "heads": {}}
    for name, rs in runs.items():
        out["heads"][name] = {"batch1_ms_median": round(statistics.median(r["batch1_ms_median"] for r in rs), 2),
                              "batch_texts_per_s": round(statistics.median(r["batch_texts_per_s"] for r in rs), 1), "runs": rs}
    shipped, other = (out["heads"][n] for n in heads)
    out["ratio_batch1_ms"] = round(shipped["batch1_ms_median"] / other["batch1_ms_median"], 3)
    out["ratio_texts_per_s"] = round(shipped["batch_texts_per_s"] / other["batch_texts_per_s"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
