"""Serve the OpenAI-compatible API alone.

    python -m gpt_demo.server --port 8000                          # open, on 127.0.0.1
    python -m gpt_demo.server --host 0.0.0.0 --api-key sk-1 --api-key sk-2 --admin-api-key sk-admin
    curl -s http://127.0.0.1:8000/v1/models

The model loads before the port opens, so a client that can connect is served at once.
"""

from __future__ import annotations

import argparse
import sys

from ..web.serve_config import LOCAL_HOSTS


def parser() -> argparse.ArgumentParser:
    from ..flags import add_model_flags

    p = argparse.ArgumentParser(prog="python -m gpt_demo.server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default=None, help="interface (default: $GPT_DEMO_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--api-key", dest="api_keys", action="append", default=[], metavar="KEY",
                   help="a key clients send as 'Authorization: Bearer KEY'; repeatable (default: $GPT_DEMO_API_KEYS; "
                        "none: open)")
    p.add_argument("--admin-api-key", dest="admin_api_keys", action="append", default=[], metavar="KEY",
                   help="a key that may also delete models; repeatable (default: $GPT_DEMO_ADMIN_API_KEYS)")
    p.add_argument("--max-queue", type=int, default=None, help="requests that may wait for a slot (default 64)")
    add_model_flags(p)
    return p


def warning(host: str, port: int, keys: bool) -> str | None:
    if host in LOCAL_HOSTS or keys:
        return None
    return (f"WARNING: the API is open to every machine that can reach {host}:{port} with no key: anyone can "
            "use the model. Add --api-key KEY for clients, and --admin-api-key KEY for model deletion.")


def run_api(engine, serve, settings=None) -> int:
    """Serve ``engine``'s API alone with uvicorn, as ``serve`` (a ``ServeConfig``) says; blocks.

    ``settings`` default to the ones ``engine`` was loaded with (then ``$GPT_DEMO_*``).
    """
    import uvicorn

    from .app import create_api

    port = serve.port
    app = create_api(engine, settings, api_keys=serve.api_keys, admin_api_keys=serve.admin_api_keys,
                     max_queue=serve.max_queue, exposed=serve.exposed)
    note = warning(serve.host, port, bool(app.state.gpt_demo.api_keys or app.state.gpt_demo.admin_api_keys))
    if note:
        print(note, file=sys.stderr)
    print(f"OpenAI-compatible API for {engine.model_name} at http://{serve.host}:{port}/v1", flush=True)
    uvicorn.run(app, host=serve.host, port=port, log_level="warning")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from ..api import load_engine
    from ..config import Settings
    from ..web.serve_config import ServeConfig
    from .app import DEFAULT_MAX_QUEUE

    settings = Settings.from_env(decode=getattr(args, "decode", None))  # --decode reaches every engine loaded later
    serve = ServeConfig.from_settings(settings, host=args.host, port=args.port, api_keys=args.api_keys or None,
                                      admin_api_keys=args.admin_api_keys or None,
                                      max_queue=args.max_queue or DEFAULT_MAX_QUEUE)
    from ..backends.registry import is_remote

    if is_remote(args.model or settings.model):
        raise SystemExit(f"gpt-demo server: error: --model {args.model or settings.model} is a remote server with an "
                         "API of its own; point clients there (this server serves local models)")
    engine = load_engine(args.model, quantize=args.quantize, device=args.device, settings=settings,
                         adapter=args.adapter, reward_model=args.reward_model, progress=False,
                         api_key_env=getattr(args, "api_key_env", None))
    return run_api(engine, serve, settings)


if __name__ == "__main__":
    sys.exit(main())
