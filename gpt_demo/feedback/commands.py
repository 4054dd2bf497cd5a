"""``gpt-demo feedback stats`` and ``gpt-demo feedback export`` (registered by ``gpt_demo.cli``).

    gpt-demo feedback stats
    gpt-demo feedback export --format jsonl --out pairs.jsonl     # TRL's prompt/chosen/rejected
    gpt-demo feedback export --format parquet --out pairs.parquet
"""

from __future__ import annotations

import argparse
import json
import sys


def cmd_stats(args: argparse.Namespace) -> int:
    from .store import FeedbackStore

    store = FeedbackStore.open()
    counts = store.counts()
    if args.json:
        print(json.dumps({**counts, "path": store.path}))
    else:
        print(f"{counts['rankings']} rankings, {counts['pairs']} preference pairs in {store.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .store import EXPORT_FORMATS, FeedbackStore

    if args.format not in EXPORT_FORMATS:
        raise ValueError(f"format={args.format!r} is not allowed; choose one of {', '.join(EXPORT_FORMATS)}")
    store = FeedbackStore.open()
    out = args.out or f"preference_pairs.{args.format}"
    if out == "-" and args.format == "jsonl":
        for pair in store.pairs():
            sys.stdout.write(json.dumps(pair, ensure_ascii=False) + "\n")
        return 0
    n = store.export(out, args.format)
    print(f"Wrote {n} preference pairs to {out}", file=sys.stderr)
    return 0


def register(add) -> None:
    p = add("feedback", lambda args: p.print_help() or 0, "The rankings store: counts and export to TRL's preference format.")
    sub = p.add_subparsers(dest="feedback_command", metavar="SUBCOMMAND")
    s = sub.add_parser("stats", help="How many rankings and preference pairs are stored.")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_stats)
    e = sub.add_parser("export", help="Write the pairs (each ranking of k answers gives k(k-1)/2; ties give none).")
    e.add_argument("--format", default="jsonl", help="jsonl (default) or parquet")
    e.add_argument("--out", help="output file (default preference_pairs.FORMAT; '-' prints JSONL)")
    e.set_defaults(func=cmd_export)
