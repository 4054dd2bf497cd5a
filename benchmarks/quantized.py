"""Memory and decode speed of the default model at each quantization, side by side in one run.

    .venv/bin/python benchmarks/quantized.py                  # CPU (bitsandbytes CPU kernels)
    .venv/bin/python benchmarks/quantized.py --device cuda    # on a GPU machine
    .venv/bin/python benchmarks/quantized.py --max-tokens 64 --modes none,4bit

Prints one JSON line: per mode, load time from the safetensors cache, the memory
footprint (transformers' get_memory_footprint), greedy decode tokens/s for
--max-tokens new tokens (end token ignored; median of --repeats after a warm-up), and whether the answer to
"What is the capital of France?" still contains "Paris". Ratios are against `none`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def measure(mode: str, device: str, max_tokens: int, repeats: int) -> dict:
    import torch

    from gpt_demo.api import load_engine
    from gpt_demo.generation.decoding import decode, run_to_end
    from gpt_demo.generation.params import GenerationParams

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    start = time.perf_counter()
    engine = load_engine(quantize=mode, device=device, progress=False)
    load_s = time.perf_counter() - start
    params = GenerationParams(temperature=0, max_tokens=max_tokens)
    ids = engine.render_chat("Tell me a story about a robot.", params).ids
    run_to_end(decode(engine.loaded, ids, params.replace(max_tokens=32), ignore_eos=True))  # warm-up
    runs = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        completion = run_to_end(decode(engine.loaded, ids, params, ignore_eos=True))
        sync()
        runs.append(len(completion.choices[0].token_ids) / (time.perf_counter() - start))
    answer = engine.chat("What is the capital of France?", temperature=0, max_tokens=16).text
    return {
        "load_s": round(load_s, 2),
        "footprint_mb": round(engine.loaded.memory_footprint / 2**20, 1),
        "tok_s": round(statistics.median(runs), 2),
        "answers_paris": "Paris" in answer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--modes", default="none,8bit,4bit")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode; the median is reported")
    args = parser.parse_args()
    import torch

    modes = args.modes.split(",")
    results = {}
    for mode in modes:
        print(f"measuring {mode} on {args.device}...", file=sys.stderr)
        results[mode] = measure(mode, args.device, args.max_tokens, args.repeats)
    if "none" in results:
        base = results["none"]
        for mode, r in results.items():
            r["footprint_ratio"] = round(r["footprint_mb"] / base["footprint_mb"], 3)
            r["speed_ratio"] = round(r["tok_s"] / base["tok_s"], 3)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(json.dumps({"benchmark": "quantized", "device": device_name, "torch": torch.__version__,
                      "max_tokens": args.max_tokens, "modes": results}))


if __name__ == "__main__":
    main()
