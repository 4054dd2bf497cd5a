"""``gpt-demo serve`` and ``gpt-demo spaces export``: registered by ``gpt_demo.cli`` (nothing heavy imported here).

    gpt-demo serve                                  # http://127.0.0.1:7860, default model; its API at /v1
    gpt-demo serve --api-only --api-key sk-local    # the OpenAI-compatible API alone, behind a key
    gpt-demo serve --host 0.0.0.0 --auth ann:pw --admin me:secret  # on your network: a rater and an admin
    gpt-demo serve --model HuggingFaceTB/SmolLM2-360M-Instruct --quantize 4bit
    gpt-demo serve --remote big=vllm:http://gpu:8000/v1#Qwen/Qwen2.5-7B-Instruct   # offered in every picker
    gpt-demo serve --model llamacpp:http://127.0.0.1:8080/v1           # the page in front of llama.cpp
    gpt-demo spaces export ./my-space               # a folder that runs as a Hugging Face Space
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace


def cmd_serve(args: argparse.Namespace) -> int:
    from ..config import Settings
    from .serve_config import ServeConfig

    # checked before the slow load
    settings = Settings.from_env(decode=args.decode, remotes=tuple(args.remote) if args.remote else None)
    from ..backends.catalog import configured_remotes

    configured_remotes(settings)  # a bad --remote or models.toml entry is named now, not at first use
    serve = ServeConfig.from_settings(settings, host=args.host, port=args.port, auth=args.auth, admin=args.admin,
                                      share=args.share, concurrency=args.concurrency, jobs=args.jobs,
                                      api=not args.no_api, api_keys=args.api_keys,
                                      admin_api_keys=args.admin_api_keys)
    if args.api_only and args.no_api:
        raise ValueError("--api-only and --no-api are not allowed together; choose one")
    from ..api import load_engine

    # --concurrency is the batch size of every model's scheduler (the page's and the API's alike),
    # --jobs the other model jobs at once: passed down in the settings every engine is loaded with.
    settings = replace(settings, limits=replace(settings.limits, concurrency=serve.concurrency, jobs=serve.jobs))
    print("Loading model...", file=sys.stderr, flush=True)
    engine = load_engine(model=args.model, quantize=args.quantize, device=args.device, adapter=args.adapter,
                         reward_model=args.reward_model, settings=settings, api_key_env=args.api_key_env)
    if args.api_only:
        from ..server.__main__ import run_api

        if engine.loaded is None:
            raise ValueError(f"--api-only is not allowed with the remote model {engine.backend}: it has an API "
                             "of its own; point clients there")
        return run_api(engine, serve, settings)
    from .app import build_app, launch

    app = build_app(engine, serve=serve, settings=settings)  # the roles of serve: raters, admins, open on your own machine
    launch(app, serve, block=True)
    return 0


def cmd_spaces_export(args: argparse.Namespace) -> int:
    from .spaces import export_space

    written = export_space(args.directory, force=args.force)
    print(f"Wrote a Space to {args.directory}: {', '.join(p.name for p in written)}")
    print("Push it: huggingface-cli upload <you>/<space-name> " + str(args.directory) + " --repo-type space")
    return 0


def register(add) -> None:
    from ..flags import add_model_flags

    p = add("serve", cmd_serve, "Start the web app (chat, rank, explain, embeddings, moderation, train).")
    p.add_argument("--host", help="interface to bind (default $GPT_DEMO_HOST or 127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, help="port (default $GPT_DEMO_PORT or 7860; 0 picks a free one)")
    p.add_argument("--auth", metavar="USER:PASSWORD", action="append",
                   help="a rater's login: chat, rank, vote (repeatable; default $GPT_DEMO_AUTH, comma-separated)")
    p.add_argument("--admin", metavar="USER:PASSWORD", action="append",
                   help="an admin's login: also export, train, delete adapters, see paths (repeatable; default "
                        "$GPT_DEMO_ADMIN). Exposed without one, Export and Train are off")
    p.add_argument("--share", action="store_true", help="open a public gradio.live link (needs internet)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="the batch size of generation: that many answers (Chat, Rank, Arena, the API) are "
                        "decoded together, step by step; others queue (default $GPT_DEMO_CONCURRENCY or 8)")
    p.add_argument("--remote", action="append", metavar="ID=SCHEME:URL#MODEL",
                   help="a remote model the pickers offer beside the base and its adapters, e.g. "
                        "big=vllm:http://gpu:8000/v1#Qwen/Qwen2.5-7B-Instruct (repeatable; also $GPT_DEMO_REMOTES "
                        "and $GPT_DEMO_HOME/models.toml)")
    p.add_argument("--jobs", type=int, default=None,
                   help="other model jobs run at once: Explain, embeddings, moderation, Compare, Train "
                        "(default $GPT_DEMO_JOBS or 2)")
    p.add_argument("--api-key", dest="api_keys", action="append", default=None, metavar="KEY",
                   help="a key REST clients send as 'Authorization: Bearer KEY' (repeatable; default "
                        "$GPT_DEMO_API_KEYS; none: the API is open, like the page)")
    p.add_argument("--admin-api-key", dest="admin_api_keys", action="append", default=None, metavar="KEY",
                   help="a REST key that may also delete models (repeatable; default $GPT_DEMO_ADMIN_API_KEYS)")
    api = p.add_mutually_exclusive_group()
    api.add_argument("--api-only", action="store_true",
                     help="serve only the OpenAI-compatible API at /v1 (no web page)")
    api.add_argument("--no-api", action="store_true", help="serve only the web page (no /v1 routes)")
    add_model_flags(p)

    sp = add("spaces", lambda args: sp.print_help() or 0, "Hugging Face Spaces: export a folder that runs as a Space.")
    ssub = sp.add_subparsers(dest="spaces_command", metavar="SUBCOMMAND")
    ep = ssub.add_parser("export", help="Write a self-contained Space to DIRECTORY: app.py, README.md (front matter), "
                                        "requirements.txt (the dependencies) and gpt_demo/ (the package itself).")
    ep.add_argument("directory", help="folder to write (created if missing)")
    ep.add_argument("--force", action="store_true", help="overwrite files that are already there")
    ep.set_defaults(func=cmd_spaces_export)
