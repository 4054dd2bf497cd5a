"""The web app under load: rankings per second from concurrent clients, and chat latency idle vs busy.

    .venv/bin/python benchmarks/web_load.py                      # 8 clients x 25 rankings, 3 chats each way
    .venv/bin/python benchmarks/web_load.py --clients 16 --rankings 50

Prints exactly one JSON line on stdout; progress goes to stderr. The app is launched in this
process on a free port with a fresh store and driven over HTTP with ``gradio_client``, as a
browser would through the same queue.

- ``rankings_per_s``: ``clients`` threads each submit ``rankings`` rankings of 3 typed answers
  (``/rank_submit``, one SQLite transaction each); ``stored`` must equal ``submitted``.
- ``chat_idle_s`` / ``chat_busy_s``: median seconds for a greedy 32-token answer
  (``/chat_add`` then ``/chat_reply``), alone and while 2 other clients chat without pause;
  ``busy_over_idle`` is their ratio (with ``--concurrency 2`` two generations share the CPU,
  a third waits in the queue).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
GREEDY = [0.0, 1.0, 32, "", 0.0, 0.0, 1, "", "", ""]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def chat_once(client) -> float:
    started = time.perf_counter()
    client.predict("Explain what a rainbow is.", "off", *GREEDY, api_name="/chat_add")
    client.predict("off", *GREEDY, api_name="/chat_reply")
    elapsed = time.perf_counter() - started
    client.predict(api_name="/chat_clear")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rankings", type=int, default=25)
    ap.add_argument("--chats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()

    from gradio_client import Client

    from gpt_demo.api import load_engine
    from gpt_demo.feedback import FeedbackStore
    from gpt_demo.web.app import build_app, launch
    from gpt_demo.web.serve_config import ServeConfig

    log("loading the model and launching the app...")
    engine = load_engine(device="cpu", progress=False)
    store = FeedbackStore(Path(tempfile.mkdtemp()) / "feedback.sqlite")
    serve = ServeConfig(port=0, concurrency=args.concurrency)
    app = build_app(engine, store=store, serve=serve)
    url = launch(app, serve, block=False, quiet=True)

    log(f"{args.clients} clients x {args.rankings} rankings...")
    errors: list[str] = []

    def submitter(c: int) -> None:
        client = Client(url, verbose=False)
        for i in range(args.rankings):
            status, _ = client.predict(f"c{c} r{i}", 3, "a", "b", "c", "", "", "", "2", "1", "3", None, None, None,
                                       api_name="/rank_submit")
            if not status.startswith("Stored"):
                errors.append(status)

    threads = [threading.Thread(target=submitter, args=(c,)) for c in range(args.clients)]
    started = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    rank_s = time.perf_counter() - started
    submitted = args.clients * args.rankings
    stored = store.counts()["rankings"]

    log("chat latency, idle...")
    client = Client(url, verbose=False)
    chat_once(client)  # warm-up
    idle = [chat_once(client) for _ in range(args.chats)]
    log("chat latency, with 2 other clients chatting...")
    stop = threading.Event()

    def background() -> None:
        other = Client(url, verbose=False)
        while not stop.is_set():
            chat_once(other)

    noise = [threading.Thread(target=background, daemon=True) for _ in range(2)]
    [t.start() for t in noise]
    time.sleep(2)
    busy = [chat_once(client) for _ in range(args.chats)]
    stop.set()
    [t.join(timeout=120) for t in noise]
    app.close()

    print(json.dumps({
        "clients": args.clients, "submitted": submitted, "stored": stored, "errors": len(errors),
        "rankings_per_s": round(submitted / rank_s, 1), "rank_wall_s": round(rank_s, 2),
        "chat_idle_s": round(statistics.median(idle), 2), "chat_busy_s": round(statistics.median(busy), 2),
        "busy_over_idle": round(statistics.median(busy) / statistics.median(idle), 2),
        "concurrency": args.concurrency, "torch_threads": __import__("torch").get_num_threads(),
    }))


if __name__ == "__main__":
    main()
