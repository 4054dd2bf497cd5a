"""Many streams at once through the real HTTP API: continuous batching on against off (issue 13).

    .venv/bin/python benchmarks/serve_load.py                        # K = 1,2,4,8,16, 128 tokens, 2 rounds (~8 min on 2 cores)
    .venv/bin/python benchmarks/serve_load.py --rounds 1             # one round (~4 min)
    .venv/bin/python benchmarks/serve_load.py --streams 1,8 --max-tokens 64
    .venv/bin/python benchmarks/serve_load.py --no-llama-cpp --plot ''   # our two servers only, no figure
    .venv/bin/python benchmarks/serve_load.py --quick                # tiny settings: checks that it works
    .venv/bin/python benchmarks/serve_load.py --adapter-mix          # base/adapter/mixed at K=8 (~4 min), no sweep

Prints exactly one JSON line on stdout; progress goes to stderr. The figure (aggregate
tokens/s against K) goes to ``docs/serve_load.png`` (``--plot PATH``; ``--plot ''`` skips it;
it needs matplotlib).

Servers, each a real subprocess on a free 127.0.0.1 port, API only
(``python -m gpt_demo.server``, the same as ``gpt-demo serve --api-only``):

- ``on``: continuous batching (the default): one scheduler thread owns the model, and requests
  join and leave the running batch step by step.
- ``off``: ``GPT_DEMO_BATCHING=0``, today's path before the scheduler: each request runs its
  own decode loop in one of the API's ``GPT_DEMO_CONCURRENCY`` worker threads.
- ``llama_cpp``: the anchor, if ``llama_cpp.server`` is importable (the default looks in
  ``/work/bench-site`` too, ``--llama-cpp-path``): ``python -m llama_cpp.server`` on the
  packaged GGUF (``packaged_gguf``, Q4_1) with ``--n_threads 2``. llama-cpp-python 0.3.36's server
  has no ``--parallel`` (that is llama.cpp's own C++ server): it serves one request at a time
  and queues the rest. We pass ``--interrupt_requests False``, since its default lets a new
  request cut off the stream in progress.

Both our servers get the same ``GPT_DEMO_CONCURRENCY`` (``--concurrency``, default the largest
K, 16), so every K runs all its streams at once on both: a reader of "K streams" expects K
being served, not half of them queued. For K <= 8 this measures exactly the shipped default of
8: the batching server's step costs what its used rows cost (free rows are never computed) and
the off server's gate never has more than K jobs. Everything else is the default settings.

The servers start one after the other and stay up together, but only one is ever loaded:
each K is a round of the three servers in turn (the order flips every K and every round, so
drift and other load on the machine hit every side alike). Before any server starts, one
short process builds (or loads from its cache) the compiled decode step (``models.native``),
so no server times its first requests on the Python loop; then every server gets warm-up
requests (one stream, then ``max(K)`` streams of 16 tokens) that are not counted.

Workload: K threads, each with its own ``openai.OpenAI`` client, start together at a barrier
and each sends one streaming chat completion (``stream_options={"include_usage": True}``),
greedy (``temperature=0``), ``max_tokens`` 128, stream ``i`` asking ``PROMPTS[i]`` (16
distinct prompts that ask for long answers). The API has no ``ignore_eos``, so an answer may
stop early: every figure counts the tokens actually made, ``usage.completion_tokens``
(llama.cpp: the usage chunk when it sends one, else one token per content chunk). The clients
run in this process, so their parsing costs count against every server alike.

Figures per K and server (all rounds pooled):

- ``aggregate_tok_s``: all completion tokens over all round wall times (the first request
  sent to the last stream closed);
- ``per_stream_tok_s``: the median over streams of ``(tokens - 1) / (last token - first
  token)``, each stream's own decode speed once it has started (``per_stream_min`` too);
- ``ttft_p50_s`` / ``ttft_p95_s``: time to the first content chunk, from each stream's own
  request (nearest-rank percentiles over all streams of all rounds);
- ``max_gap_s``: the longest pause between two chunks of any stream (a stall shows here);
- ``errors``: failed streams (an HTTP 503 included), with the first messages.

``--adapter-mix`` (``--mix-streams K``, default 8) replaces the K sweep: in a temporary
``GPT_DEMO_HOME`` (its ``models`` a symlink to the usual converted-model cache; removed at the
end) one subprocess trains a LoRA adapter ``bench-mix`` (``api.train_sft``, one step on 8
prompt/completion rows, ~40-60 s), then only the ``on`` server starts (``--streams``, the llama.cpp
options and ``--plot`` are ignored). An adapter is its own engine (bf16 decode, its own scheduler),
so its requests batch apart from the base's and the two groups compete for the cores. Warm-up
(uncounted, the adapter engine loads on its first request), then per round three workloads in
turn (the order flips every round), each K streams at a barrier: ``base`` (all K ask the base
model), ``adapter`` (all ask ``BASE:bench-mix``), ``mixed`` (even streams the base, odd ones the
adapter, each stream the same prompt as alone). The JSON line's ``adapter_mix`` holds
``summarize`` of each, ``mixed_base_streams`` / ``mixed_adapter_streams`` (each half of the
mixed rounds; its aggregate is its tokens over the whole round's wall time),
``ratio_mixed_base_*`` and ``ratio_mixed_adapter_*`` (aggregate and per-stream tok/s), and text
checks: ``adapter_text_differs_from_base`` (prompts whose greedy answers differ: the adapter is
really applied) and ``mixed_text_same_as_alone`` (streams whose mixed answer equals the same
model's answer alone).

``ratio_on_off`` = on / off aggregate, per K. ``goals`` checks issue 13's aims on the ``on``
server: aggregate at 8 streams >= 4x one stream; per-stream speed at 8 >= 0.5x a stream
alone (the K=1 per-stream figure); p95 time to first token at 8 streams <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

PROMPTS = [
    "Write a long, detailed story about a robot who learns to paint.",
    "Write a long story about a dragon who is afraid of the dark.",
    "Tell me a long story about a lighthouse keeper and a terrible storm.",
    "Write a long story about a cat who dreams of flying over the city.",
    "Tell me a long, detailed story about two friends lost in a forest.",
    "Write a long story about a little boat crossing a stormy ocean.",
    "Tell me a long story about a wizard who forgot all of his spells.",
    "Write a long story about a girl who finds an old map in the attic.",
    "Explain in detail how a steam engine works, step by step.",
    "Describe, in a long essay, the history of the printing press.",
    "Write a long story about a baker who opens a shop on the moon.",
    "Explain in detail how plants turn sunlight into food.",
    "Tell me a long story about a detective solving a mystery in a train.",
    "Write a detailed essay about why the oceans are important for life on Earth.",
    "Tell me a long story about an old clockmaker and his apprentice.",
    "Describe in detail a journey across a desert on a camel.",
]

SERVERS = ("on", "off", "llama_cpp")
DEFAULT_LLAMA_PATH = "/work/bench-site"


def log(message: str) -> None:
    print(f"[serve-load] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="1,2,4,8,16", help="Comma-separated K, concurrent streams (default 1,2,4,8,16).")
    p.add_argument("--max-tokens", type=int, default=128, help="max_tokens per stream (default 128).")
    p.add_argument("--rounds", type=int, default=2, help="Rounds over every K and server (default 2).")
    p.add_argument("--concurrency", type=int, default=None,
                   help="GPT_DEMO_CONCURRENCY for both our servers (default: the largest K).")
    p.add_argument("--llama-cpp-path", default=DEFAULT_LLAMA_PATH,
                   help=f"Extra PYTHONPATH entry where llama_cpp lives (default {DEFAULT_LLAMA_PATH}; '' for none).")
    p.add_argument("--no-llama-cpp", action="store_true", help="Skip the llama.cpp anchor.")
    p.add_argument("--plot", default=str(ROOT / "docs" / "serve_load.png"),
                   help="Where to draw aggregate tok/s against K (default docs/serve_load.png; '' for none).")
    p.add_argument("--quick", action="store_true", help="Tiny settings (K 1,2, 8 tokens, 1 round, no plot).")
    p.add_argument("--adapter-mix", action="store_true",
                   help="Instead of the K sweep: base / adapter / half-and-half workloads on the batching server.")
    p.add_argument("--mix-streams", type=int, default=8,
                   help="K of --adapter-mix (default 8; the mixed workload sends K//2 to the base, the rest to the adapter).")
    args = p.parse_args(argv)
    if not 2 <= args.mix_streams <= len(PROMPTS):
        p.error(f"--mix-streams needs an integer from 2 to {len(PROMPTS)}")
    if args.adapter_mix and args.concurrency is None:
        args.concurrency = args.mix_streams
    if args.quick:
        args.streams, args.max_tokens, args.rounds, args.plot = "1,2", 8, 1, ""
    try:
        args.streams = sorted({int(k) for k in str(args.streams).split(",") if k.strip()})
    except ValueError:
        p.error(f"--streams={args.streams!r} is not allowed; give comma-separated integers such as 1,8")
    if not args.streams or min(args.streams) < 1 or max(args.streams) > len(PROMPTS):
        p.error(f"--streams needs integers from 1 to {len(PROMPTS)} (one distinct prompt per stream)")
    if args.max_tokens < 1 or args.rounds < 1:
        p.error("--max-tokens and --rounds must be >= 1")
    if args.concurrency is None:
        args.concurrency = max(args.streams)
    if args.concurrency < 1:
        p.error("--concurrency must be >= 1")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server subprocess; ``base_url`` once ``GET /v1/models`` answers."""

    def __init__(self, name: str, cmd: list[str], env: dict, logdir: Path):
        self.name, self.cmd = name, cmd
        self.port = int(cmd[cmd.index("--port") + 1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.model = None

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self.proc.returncode}; log:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=5) as r:
                    self.model = json.load(r)["data"][0]["id"]
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"server {self.name} did not answer in {timeout:.0f}s; log:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def stream_once(client, model: str, prompt: str, max_tokens: int) -> dict:
    """One streaming chat completion; times of each content chunk and the tokens made."""
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True})
    times, used, parts = [], None, []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
            parts.append(chunk.choices[0].delta.content)
        if getattr(chunk, "usage", None) is not None:
            used = chunk.usage.completion_tokens
    t_end = time.perf_counter()
    if not times:
        raise RuntimeError("the stream ended without any content")
    return {"tokens": used if used is not None else len(times), "usage": used is not None,
            "start": t0, "end": t_end, "ttft": times[0] - t0, "first": times[0], "last": times[-1],
            "max_gap": max((b - a for a, b in zip(times, times[1:])), default=0.0), "text": "".join(parts)}


def run_round(clients, model: str | list[str], k: int, max_tokens: int) -> dict:
    """K streams started together at a barrier; per-stream records and the round's wall time.

    ``model`` is one model id for every stream, or a list: stream ``i`` asks ``model[i]``."""
    models = [model] * k if isinstance(model, str) else list(model)
    results: list[dict | None] = [None] * k
    errors: list[str] = []
    barrier = threading.Barrier(k + 1)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = stream_once(clients[i], models[i], PROMPTS[i], max_tokens)
            results[i]["model"], results[i]["i"] = models[i], i
        except Exception as exc:  # counted and reported, the round goes on
            errors.append(f"stream {i}: {type(exc).__name__}: {str(exc)[:300]}")

    threads = [threading.Thread(target=worker, args=(i,), name=f"serve-load-{i}") for i in range(k)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    streams = [r for r in results if r is not None]
    return {"k": k, "wall": wall, "streams": streams, "errors": errors,
            "tokens": sum(r["tokens"] for r in streams)}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(rounds: list[dict]) -> dict:
    streams = [s for r in rounds for s in r["streams"]]
    errors = [e for r in rounds for e in r["errors"]]
    wall = sum(r["wall"] for r in rounds)
    tokens = sum(r["tokens"] for r in rounds)
    speeds = [(s["tokens"] - 1) / (s["last"] - s["first"]) for s in streams
              if s["tokens"] > 1 and s["last"] > s["first"]]
    ttfts = [s["ttft"] for s in streams]

    def r3(x):
        return None if x is None else round(x, 3)

    return {
        "aggregate_tok_s": r3(tokens / wall) if wall > 0 and tokens else None,
        "per_stream_tok_s": r3(statistics.median(speeds)) if speeds else None,
        "per_stream_min": r3(min(speeds)) if speeds else None,
        "ttft_p50_s": r3(percentile(ttfts, 50)),
        "ttft_p95_s": r3(percentile(ttfts, 95)),
        "ttft_max_s": r3(max(ttfts)) if ttfts else None,
        "max_gap_s": r3(max((s["max_gap"] for s in streams), default=None)) if streams else None,
        "tokens": tokens,
        "mean_tokens_per_stream": r3(tokens / len(streams)) if streams else None,
        "wall_s": r3(wall),
        "round_aggregate_tok_s": [r3(r["tokens"] / r["wall"]) for r in rounds if r["wall"] > 0],
        "usage_counted": all(s["usage"] for s in streams),
        "streams_ok": len(streams),
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def llama_cpp_available(path: str) -> tuple[bool, str]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(x for x in (path, env.get("PYTHONPATH", "")) if x)
    r = subprocess.run([PYTHON, "-c", "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"],
                       env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        lines = (r.stderr.strip() or "import failed").splitlines()
        return False, lines[-1][:200]
    return True, r.stdout.strip()


def build_native_step() -> str:
    """Build, or load from its cache, the compiled decode step once, before any server starts."""
    code = ("from gpt_demo.models import native; ok = native.wait(900); print(native.status())")
    r = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=1000)
    return (r.stdout.strip().splitlines() or [f"failed: {r.stderr.strip()[-200:]}"])[-1]


def plot(path: str, ks: list[int], results: dict, names: list[str]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no figure"
    labels = {"on": "gpt-demo, batching on", "off": "gpt-demo, batching off (GPT_DEMO_BATCHING=0)",
              "llama_cpp": "llama-cpp-python server (one request at a time)"}
    styles = {"on": "o-", "off": "s--", "llama_cpp": "^:"}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name in names:
        ys = [results[str(k)][name]["aggregate_tok_s"] for k in ks]
        ax.plot(ks, ys, styles[name], label=labels[name])
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("concurrent streams K")
    ax.set_ylabel("aggregate completion tokens/s")
    ax.set_title("SmolLM2-135M-Instruct over the OpenAI API, 2-core CPU")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


MIX_ADAPTER = "bench-mix"
MIX_WORKLOADS = ("base", "adapter", "mixed")
TRAIN_ADAPTER = r"""
import json, sys, time
from pathlib import Path
from gpt_demo import api
home = Path(sys.argv[1])
rows = [{"prompt": f"Tell me one fact about the number {i}.", "completion": f"The number {i} comes after {i - 1}."}
        for i in range(1, 9)]
data = home / "bench-mix-sft.jsonl"
data.write_text("".join(json.dumps(r) + "\n" for r in rows))
t = time.perf_counter()
res = api.train_sft(str(data), out=sys.argv[2], max_steps=1, batch_size=8, progress=False)
print(json.dumps({"seconds": round(time.perf_counter() - t, 1), "loss_before": res.metrics.get("loss_before"),
                  "loss_after": res.metrics.get("loss_after"), "steps": res.metrics.get("steps")}))
"""


def train_mix_adapter(home: Path, env: dict) -> dict:
    """One-step LoRA SFT on 8 rows, saved as adapter ``MIX_ADAPTER`` under ``home`` (its own process)."""
    r = subprocess.run([PYTHON, "-c", TRAIN_ADAPTER, str(home), MIX_ADAPTER], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"training the {MIX_ADAPTER} adapter failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def adapter_mix(args, openai) -> dict:
    """--adapter-mix: the batching server in a temporary GPT_DEMO_HOME with one adapter; three workloads at K."""
    import shutil

    from gpt_demo.config import Settings

    k, n = args.mix_streams, args.max_tokens
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    for var in ("GPT_DEMO_BATCHING", "GPT_DEMO_CONCURRENCY"):
        env.pop(var, None)
    models_dir = Settings.from_env(env).models_dir  # the converted-model cache the servers use already
    home = Path(tempfile.mkdtemp(prefix="serve_load_home_"))
    if models_dir.is_dir():
        (home / "models").symlink_to(models_dir.resolve(), target_is_directory=True)
    env["GPT_DEMO_HOME"] = str(home)
    logdir = Path(tempfile.mkdtemp(prefix="serve_load_"))
    server = None
    try:
        t = time.perf_counter()
        training = train_mix_adapter(home, env)
        log(f"adapter {MIX_ADAPTER}: {time.perf_counter() - t:.1f}s in all ({training})")
        env["GPT_DEMO_CONCURRENCY"], env["GPT_DEMO_BATCHING"] = str(args.concurrency), "1"
        t = time.perf_counter()
        server = Server("on", [PYTHON, "-m", "gpt_demo.server", "--port", str(free_port())], env, logdir)
        server.wait_ready()
        with urllib.request.urlopen(server.base_url + "/models", timeout=30) as r:
            ids = [m["id"] for m in json.load(r)["data"]]
        base, adapter = server.model, f"{server.model}:{MIX_ADAPTER}"
        if adapter not in ids:
            raise RuntimeError(f"the server does not list {adapter}; it lists {ids}")
        log(f"server on ready at {server.base_url} in {time.perf_counter() - t:.1f}s (home {home}; log {server.log_path})")
        half = k // 2  # mixed: even streams to the base, odd ones (and an odd K's last) to the adapter
        plans = {"base": [base] * k, "adapter": [adapter] * k,
                 "mixed": [base if i % 2 == 0 and i < 2 * half else adapter for i in range(k)]}
        clients = [openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=900) for _ in range(k)]
        t = time.perf_counter()
        warm = [run_round(clients, base, 1, 32), run_round(clients, adapter, 1, 32)]  # the adapter loads here
        warm += [run_round(clients, plans[w], k, 16) for w in MIX_WORKLOADS]
        warmup_errors = sum(len(r["errors"]) for r in warm)
        log(f"warm-up: {time.perf_counter() - t:.1f}s (the adapter engine loads on its first request), "
            f"errors {warmup_errors}")
        runs = {w: [] for w in MIX_WORKLOADS}
        for r_i in range(args.rounds):
            for w in (MIX_WORKLOADS if r_i % 2 == 0 else MIX_WORKLOADS[::-1]):
                res = run_round(clients, plans[w], k, n)
                runs[w].append(res)
                log(f"round {r_i + 1}/{args.rounds} K={k} {w}: {res['tokens']} tokens in {res['wall']:.2f}s = "
                    f"{res['tokens'] / res['wall']:.2f} tok/s, errors {len(res['errors'])}")
        alive = server.proc.poll() is None
        log_errors = server.tail(1500) if any(w in server.tail(20000) for w in ("Traceback", "ERROR", "Exception")) \
            else None
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)  # the models symlink goes, not what it points to

    out = {w: summarize(runs[w]) for w in MIX_WORKLOADS}
    for side, model in (("base", base), ("adapter", adapter)):  # each half of the mixed rounds on its own
        sub = [{**r, "streams": [s for s in r["streams"] if s["model"] == model]} for r in runs["mixed"]]
        for r in sub:
            r["tokens"] = sum(s["tokens"] for s in r["streams"])
        part = summarize(sub)
        out[f"mixed_{side}_streams"] = {key: part[key] for key in (
            "aggregate_tok_s", "per_stream_tok_s", "per_stream_min", "ttft_p50_s", "ttft_p95_s", "tokens", "streams_ok")}

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    for key in ("aggregate_tok_s", "per_stream_tok_s"):
        out[f"ratio_mixed_base_{key}"] = ratio(out["mixed"][key], out["base"][key])
        out[f"ratio_mixed_adapter_{key}"] = ratio(out["mixed"][key], out["adapter"][key])
    texts = {w: [{s["i"]: s["text"] for s in r["streams"]} for r in runs[w]] for w in MIX_WORKLOADS}
    first_base, first_adapter = texts["base"][0], texts["adapter"][0]
    out["same_text_across_rounds"] = {w: all(t == texts[w][0] for t in texts[w]) for w in MIX_WORKLOADS}
    out["adapter_text_differs_from_base"] = sum(first_adapter.get(i) != first_base.get(i) for i in first_base)
    # greedy: the mixed rounds' answers against the same prompt and model alone (batch-size numerics may differ)
    out["mixed_text_same_as_alone"] = sum(
        text == (first_base if plans["mixed"][i] == base else first_adapter).get(i) for i, text in texts["mixed"][0].items())
    out.update({"streams": k, "max_tokens": n, "rounds": args.rounds, "concurrency": args.concurrency,
                "model": base, "adapter_model": adapter,
                "adapter_training": training, "warmup_errors": warmup_errors, "server_alive_at_end": alive,
                "server_log_errors": log_errors})
    out["mixed_plan"] = {"base_streams": plans["mixed"].count(base), "adapter_streams": plans["mixed"].count(adapter)}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import openai

    if args.adapter_mix:
        return main_adapter_mix(args, openai)

    ks, n = args.streams, args.max_tokens
    load_start = [round(x, 2) for x in os.getloadavg()]
    log(f"load average at start: {load_start}")

    t = time.perf_counter()
    native_status = build_native_step()
    log(f"compiled decode step: {native_status} ({time.perf_counter() - t:.1f}s)")

    llama_note, gguf = None, None
    names = ["on", "off"]
    if args.no_llama_cpp:
        llama_note = "skipped (--no-llama-cpp)"
    else:
        ok, detail = llama_cpp_available(args.llama_cpp_path)
        if ok:
            from gpt_demo.models.registry import REGISTRY, packaged_gguf

            gguf = packaged_gguf(REGISTRY["smollm2-135m-instruct"])
            if gguf is None:
                llama_note = "no packaged GGUF"
            else:
                names.append("llama_cpp")
                llama_note = f"llama-cpp-python {detail}"
        else:
            llama_note = f"not importable: {detail}"
    log(f"llama.cpp anchor: {llama_note}")

    base_env = dict(os.environ)
    base_env.setdefault("HF_HUB_OFFLINE", "1")
    for var in ("GPT_DEMO_BATCHING", "GPT_DEMO_CONCURRENCY"):
        base_env.pop(var, None)
    logdir = Path(tempfile.mkdtemp(prefix="serve_load_"))
    servers: dict[str, Server] = {}
    try:
        for name in names:
            env = dict(base_env)
            port = free_port()
            if name == "llama_cpp":
                if args.llama_cpp_path:
                    env["PYTHONPATH"] = os.pathsep.join(x for x in (args.llama_cpp_path, env.get("PYTHONPATH", ""))
                                                        if x)
                cmd = [PYTHON, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads", "2",
                       "--n_threads_batch", "2", "--n_ctx", "8192", "--interrupt_requests", "False",
                       "--verbose", "False", "--host", "127.0.0.1", "--port", str(port)]
            else:
                env["GPT_DEMO_CONCURRENCY"] = str(args.concurrency)
                env["GPT_DEMO_BATCHING"] = "1" if name == "on" else "0"
                cmd = [PYTHON, "-m", "gpt_demo.server", "--port", str(port)]
            t = time.perf_counter()
            servers[name] = Server(name, cmd, env, logdir)
            servers[name].wait_ready()  # one at a time: loading two at once would only compete
            log(f"server {name} ready at {servers[name].base_url} in {time.perf_counter() - t:.1f}s "
                f"(model {servers[name].model}; log {servers[name].log_path})")

        clients = {name: [openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=900)
                          for _ in range(max(ks))] for name, s in servers.items()}
        warmups = {}
        for name, s in servers.items():
            t = time.perf_counter()
            a = run_round(clients[name], s.model, 1, 32)
            b = run_round(clients[name], s.model, max(ks), 16)
            warmups[name] = a["errors"] + b["errors"]
            log(f"warm-up {name}: {time.perf_counter() - t:.1f}s, errors {len(warmups[name])}")

        runs = {k: {name: [] for name in names} for k in ks}
        for r_i in range(args.rounds):
            for k_i, k in enumerate(ks):
                order = names if (r_i + k_i) % 2 == 0 else names[::-1]
                for name in order:
                    res = run_round(clients[name], servers[name].model, k, n)
                    runs[k][name].append(res)
                    log(f"round {r_i + 1}/{args.rounds} K={k} {name}: {res['tokens']} tokens in {res['wall']:.2f}s = "
                        f"{res['tokens'] / res['wall']:.2f} tok/s, ttft max "
                        f"{max((x['ttft'] for x in res['streams']), default=float('nan')):.2f}s, "
                        f"errors {len(res['errors'])}")
        same_text = {}
        for k in ks:  # greedy: each server's answers should be the same in every round
            same_text[str(k)] = {name: all([x["text"] for x in r["streams"]] ==
                                           [x["text"] for x in runs[k][name][0]["streams"]]
                                           for r in runs[k][name]) for name in names}
        alive = {name: s.proc.poll() is None for name, s in servers.items()}
        logs_with_errors = {name: s.tail(1500) for name, s in servers.items()
                            if any(w in s.tail(20000) for w in ("Traceback", "ERROR", "Exception"))}
    finally:
        for s in servers.values():
            s.stop()

    results = {str(k): {name: summarize(runs[k][name]) for name in names} for k in ks}
    for k in ks:
        on, off = results[str(k)]["on"]["aggregate_tok_s"], results[str(k)]["off"]["aggregate_tok_s"]
        results[str(k)]["ratio_on_off"] = round(on / off, 3) if on and off else None
        if "llama_cpp" in names:
            lc = results[str(k)]["llama_cpp"]["aggregate_tok_s"]
            results[str(k)]["ratio_on_llama_cpp"] = round(on / lc, 3) if on and lc else None

    goals = None
    if 1 in ks and 8 in ks:
        one, eight = results["1"]["on"], results["8"]["on"]
        scale = eight["aggregate_tok_s"] / one["aggregate_tok_s"] if one["aggregate_tok_s"] else None
        share = eight["per_stream_tok_s"] / one["per_stream_tok_s"] if one["per_stream_tok_s"] else None
        goals = {
            "aggregate_8_over_1": round(scale, 3) if scale else None, "aggregate_goal_4x": bool(scale and scale >= 4),
            "per_stream_8_over_1": round(share, 3) if share else None, "per_stream_goal_0_5x": bool(share and share >= 0.5),
            "ttft_p95_8_s": eight["ttft_p95_s"],
            "ttft_goal_1s": eight["ttft_p95_s"] is not None and eight["ttft_p95_s"] <= 1.0,
        }

    plot_note = None
    if args.plot:
        plot_note = plot(args.plot, ks, results, names)
        log(plot_note or f"figure: {args.plot}")

    print(json.dumps({
        "benchmark": "serve_load",
        "model": servers["on"].model,
        "streams": ks,
        "max_tokens": n,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "servers": names,
        "llama_cpp": llama_note,
        "compiled_decode_step": native_status,
        "results": results,
        "goals": goals,
        "same_text_across_rounds": same_text,
        "warmup_errors": {k: len(v) for k, v in warmups.items()},
        "servers_alive_at_end": alive,
        "server_log_errors": logs_with_errors or None,
        "plot": None if not args.plot or plot_note else os.path.relpath(args.plot, ROOT),
        "plot_note": plot_note,
        "host": host_info(openai, load_start),
    }), flush=True)
    return 0


def host_info(openai, load_start: list[float]) -> dict:
    """The machine and versions a figure was measured on, and the load average before and after."""
    from importlib.metadata import version

    return {"cpu_count": os.cpu_count(), "torch": version("torch"), "openai": openai.__version__,
            "python": platform.python_version(), "loadavg_start": load_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()]}


def main_adapter_mix(args, openai) -> int:
    load_start = [round(x, 2) for x in os.getloadavg()]
    log(f"load average at start: {load_start}")
    t = time.perf_counter()
    native_status = build_native_step()
    log(f"compiled decode step: {native_status} ({time.perf_counter() - t:.1f}s)")
    mix = adapter_mix(args, openai)
    print(json.dumps({
        "benchmark": "serve_load",
        "mode": "adapter_mix",
        "model": mix["model"],
        "servers": ["on"],
        "compiled_decode_step": native_status,
        "adapter_mix": mix,
        "host": host_info(openai, load_start),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
