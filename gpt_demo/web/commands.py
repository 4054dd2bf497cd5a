"""``gpt-demo serve`` and ``gpt-demo spaces export``: registered by ``gpt_demo.cli`` (nothing heavy imported here).

    gpt-demo serve                                  # http://127.0.0.1:7860, default model
    gpt-demo serve --host 0.0.0.0 --auth me:secret  # on your network, with a password
    gpt-demo serve --model HuggingFaceTB/SmolLM2-360M-Instruct --quantize 4bit
    gpt-demo spaces export ./my-space               # a folder that runs as a Hugging Face Space
"""

from __future__ import annotations

import argparse
import sys


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve_config import ServeConfig

    serve = ServeConfig.from_settings(host=args.host, port=args.port, auth=args.auth, share=args.share,
                                      concurrency=args.concurrency)  # validated before the slow load
    from ..api import load_engine
    from .app import build_app, launch

    print("Loading model...", file=sys.stderr, flush=True)
    engine = load_engine(model=args.model, quantize=args.quantize, device=args.device, adapter=args.adapter,
                         reward_model=args.reward_model)
    app = build_app(engine, serve=serve)
    launch(app, serve, block=True)
    return 0


def cmd_spaces_export(args: argparse.Namespace) -> int:
    from .spaces import export_space

    written = export_space(args.directory, force=args.force)
    print(f"Wrote a Space to {args.directory}: {', '.join(p.name for p in written)}")
    print("Push it: huggingface-cli upload <you>/<space-name> " + str(args.directory) + " --repo-type space")
    return 0


def register(add) -> None:
    from ..cli import _add_model_flags

    p = add("serve", cmd_serve, "Start the web app (chat, rank, explain, embeddings, moderation, train).")
    p.add_argument("--host", help="interface to bind (default $GPT_DEMO_HOST or 127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, help="port (default $GPT_DEMO_PORT or 7860; 0 picks a free one)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require this login (default $GPT_DEMO_AUTH)")
    p.add_argument("--share", action="store_true", help="open a public gradio.live link (needs internet)")
    p.add_argument("--concurrency", type=int, default=None, help="generations run at once; others queue (default 2)")
    _add_model_flags(p)

    sp = add("spaces", lambda args: sp.print_help() or 0, "Hugging Face Spaces: export a folder that runs as a Space.")
    ssub = sp.add_subparsers(dest="spaces_command", metavar="SUBCOMMAND")
    ep = ssub.add_parser("export", help="Write app.py, requirements.txt and README.md (front matter) to DIRECTORY.")
    ep.add_argument("directory", help="folder to write (created if missing)")
    ep.add_argument("--force", action="store_true", help="overwrite files that are already there")
    ep.set_defaults(func=cmd_spaces_export)
