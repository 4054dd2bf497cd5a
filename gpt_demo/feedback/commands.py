"""``gpt-demo feedback stats|export|leaderboard`` (registered by ``gpt_demo.cli``).

    gpt-demo feedback stats
    gpt-demo feedback export --format jsonl --out pairs.jsonl     # TRL's prompt/chosen/rejected
    gpt-demo feedback export --format parquet --out pairs.parquet
    gpt-demo feedback leaderboard                                 # Elo and Bradley-Terry from the arena's votes
    gpt-demo feedback leaderboard --bootstrap 1000 --seed 1 --json --export-battles battles.json --plot wins.png
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


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard import export_battles, leaderboard, plot_win_rates  # numpy loads here, not at --help
    from .store import FeedbackStore

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap={args.bootstrap} is not allowed; give a number of rounds >= 0 (0 = no intervals)")
    store = FeedbackStore.open()
    battles = store.battles(anonymous_only=args.anonymous_only)
    board = leaderboard(battles, bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps({**board.to_dict(), "path": store.path}))
    elif not battles:
        print(f"No cross-model arena votes{' (anonymous)' if args.anonymous_only else ''} in {store.path} yet: "
              "vote between two models' answers in the arena first.")
    else:
        print(board.to_markdown())
    if args.export_battles:
        n = export_battles(battles, args.export_battles)
        print(f"Wrote {n} battles in FastChat's format to {args.export_battles}", file=sys.stderr)
    if args.plot:
        try:
            fig = plot_win_rates(board)
        except ImportError as err:
            raise RuntimeError(str(err)) from None
        fig.savefig(args.plot, dpi=120)
        print(f"Wrote the win-rate matrix to {args.plot}", file=sys.stderr)
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
    lb = sub.add_parser("leaderboard", help="Rank the models of the arena's cross-model votes (Elo, Bradley-Terry).",
                        description="Online Elo (K=4) and Bradley-Terry ratings with bootstrap 95% intervals, "
                                    "as FastChat's Chatbot Arena computes them, from the store's cross-model votes.")
    lb.add_argument("--bootstrap", type=int, default=100, metavar="N",
                    help="bootstrap rounds for the 95%% intervals (default 100; 0 = none)")
    lb.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the bootstrap resampling (default 0)")
    lb.add_argument("--anonymous-only", action="store_true", help="count only blind votes (FastChat's rule)")
    lb.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    lb.add_argument("--export-battles", metavar="PATH", help="also write the battles as FastChat's JSON list")
    lb.add_argument("--plot", metavar="PATH", help="also save the win-rate matrix as an image (needs matplotlib)")
    lb.set_defaults(func=cmd_leaderboard)
