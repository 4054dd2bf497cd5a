"""Training benchmark: SFT throughput (ours vs plain TRL ``SFTTrainer``, same LoRA, same data, one run),
the share of this CPU's measured matmul peak, and reward-model pair accuracy on held-out oasst1 trees.

    python benchmarks/train.py                                  # defaults: about 10 minutes on 2 busy CPU cores
    python benchmarks/train.py --sft-steps 20 --reward-steps 100 --device cuda
    python benchmarks/train.py --skip-reward

Prints one JSON line. Data: ../shared/data/sft/sft.jsonl and ../shared/data/preferences (oasst1, Apache-2.0),
read in place, never copied. FLOPs per trained token with LoRA: forward 2N + backward through the
frozen weights 2N (no weight gradients) = 4N, N = matmul parameters (the tied output head included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def matmul_peak(device: str, size: int = 1024, seconds: float = 3.0) -> float:
    """Best fp32 GFLOP/s of square matmuls (the shape class LoRA training spends its time in)."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 10 * 2 * size**3 / (time.perf_counter() - t) / 1e9)
    return best


def matmul_params(model) -> int:
    """Parameters that take part in matmuls per token: every Linear weight (lm_head counted even if tied)."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def sft_rows(n: int, tokenizer, max_length: int) -> list[dict]:
    from gpt_demo.training.data import load_sft

    rows = []
    for row in load_sft(SHARED / "sft" / "sft.jsonl"):
        n_prompt = len(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True))
        if n_prompt < max_length // 2:
            rows.append(row)
        if len(rows) == n:
            break
    return rows


def _plain_trl(cfg, rows, settings, device) -> tuple[int, float]:
    """Plain TRL: the same LoRA config and arguments, no gpt-demo code in the loop. (tokens, seconds)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from gpt_demo.training.common import load_base, lora_config, trl_args
    from gpt_demo.training.data import without_line

    model, tokenizer, _, _ = load_base(cfg, settings)
    args_trl = trl_args(SFTConfig, cfg, Path(settings.home) / "plain-trl", device, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args_trl, train_dataset=Dataset.from_list(without_line(rows)),
                         processing_class=tokenizer, peft_config=lora_config(cfg, "CAUSAL_LM"))
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # stdout carries only the one JSON line
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    tokens = int(next(h["num_tokens"] for h in reversed(trainer.state.log_history) if "num_tokens" in h))
    return tokens, seconds


def _ours(cfg, data, settings) -> tuple[int, float, dict]:
    import csv

    from gpt_demo.training.sft import train_sft

    result = train_sft(data, cfg, settings=settings)
    with open(result.curves["csv"]) as fh:
        tokens = int(float(list(csv.DictReader(fh))[-1]["num_tokens"]))
    return tokens, result.metrics["train_seconds"], result.metrics


def bench_sft(args, settings) -> dict:
    """Alternate plain TRL and ours (TRL, ours, ours, TRL, ...) with a matmul-peak probe before each run,
    so load from other processes on a shared machine hits both; report medians."""
    import statistics

    from gpt_demo.training.common import load_base
    from gpt_demo.training.sft_config import SFTTrainConfig

    cfg = SFTTrainConfig(out="bench-sft", max_steps=args.sft_steps, batch_size=args.batch_size, max_length=args.max_length,
                         device=args.device, progress=False, resume=False, save_steps=10_000)
    model, tokenizer, _, device = load_base(cfg, settings)
    n_matmul = matmul_params(model)
    del model
    rows = sft_rows(args.batch_size * args.sft_steps, tokenizer, args.max_length)
    data = Path(settings.home) / "bench_sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in rows))
    runs = {"trl": [], "ours": []}
    order = [("trl", "ours"), ("ours", "trl")] * args.repeats
    metrics = {}
    for pair in order[: args.repeats]:
        for side in pair:
            peak = matmul_peak(device, seconds=2.0)
            if side == "trl":
                tokens, seconds = _plain_trl(cfg, rows, settings, device)
            else:
                tokens, seconds, metrics = _ours(cfg, data, settings)
            tps = tokens / seconds
            runs[side].append((tps, 4 * n_matmul * tps / 1e9 / peak, peak))
    med = {side: statistics.median(r[0] for r in v) for side, v in runs.items()}
    share = {side: statistics.median(r[1] for r in v) for side, v in runs.items()}
    return {
        "sft_steps": args.sft_steps, "sft_batch_size": args.batch_size, "sft_max_length": args.max_length,
        "sft_repeats": args.repeats,
        "sft_tokens_per_s_ours": round(med["ours"], 1), "sft_tokens_per_s_trl": round(med["trl"], 1),
        "sft_ours_over_trl": round(med["ours"] / med["trl"], 3),
        "matmul_params_m": round(n_matmul / 1e6, 1),
        "matmul_peak_gflops": [round(r[2], 1) for v in runs.values() for r in v],
        "share_of_matmul_peak_ours": round(share["ours"], 3), "share_of_matmul_peak_trl": round(share["trl"], 3),
        "sft_loss_before": round(metrics["loss_before"], 4), "sft_loss_after": round(metrics["loss_after"], 4),
    }


def bench_reward(args, settings) -> dict:
    """Held-out split by oasst1 message tree (pairs of one tree share text), as the data README asks."""
    import random

    from gpt_demo.training.data import read_jsonl
    from gpt_demo.training.reward import train_reward
    from gpt_demo.training.reward_config import RewardTrainConfig

    pairs_file = SHARED / "preferences" / "oasst1_en_val_pairs.jsonl"
    meta = [obj for _, obj in read_jsonl(SHARED / "preferences" / "oasst1_en_val_pairs.meta.jsonl")]
    rows = [obj for _, obj in read_jsonl(pairs_file)]
    trees = sorted({m["message_tree_id"] for m in meta})
    random.Random(0).shuffle(trees)
    held = set(trees[: round(len(trees) * 0.2)])
    # Short pairs only, so a CPU run finishes; the cut is by characters, the same for both splits.
    short = [(r, m) for r, m in zip(rows, meta) if max(len(r["chosen"]), len(r["rejected"])) < args.reward_max_chars]
    train = [r for r, m in short if m["message_tree_id"] not in held][: args.reward_steps * args.batch_size]
    test = [r for r, m in short if m["message_tree_id"] in held][: args.reward_eval]
    tmp = Path(settings.home)
    (tmp / "rm_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    cfg = RewardTrainConfig(out="bench-rm", max_steps=args.reward_steps, batch_size=args.batch_size,
                            max_length=args.reward_max_length, eval_fraction=0.0, device=args.device,
                            progress=False, resume=False, save_steps=10_000)
    result = train_reward(tmp / "rm_train.jsonl", cfg, settings=settings, keep_model=True)
    from gpt_demo.training.data import parse_pair_rows
    from gpt_demo.training.reward import pair_metrics

    metrics = pair_metrics(result.model, parse_pair_rows(enumerate(test, 1), "held-out"))
    return {"reward_train_pairs": len(train), "reward_eval_pairs": len(test), "reward_eval_trees": len(held),
            "reward_steps": args.reward_steps, "reward_pair_accuracy": round(metrics["pair_accuracy"], 3),
            "reward_mean_margin": round(metrics["mean_margin"], 3), "reward_train_seconds": result.metrics["train_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--sft-steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--reward-steps", type=int, default=16)
    p.add_argument("--reward-eval", type=int, default=64)
    p.add_argument("--reward-max-chars", type=int, default=500)
    p.add_argument("--reward-max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2, help="SFT runs per side, alternated")
    p.add_argument("--skip-reward", action="store_true")
    p.add_argument("--skip-sft", action="store_true")
    args = p.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from gpt_demo.config import Settings

    base = Settings.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "models").symlink_to(base.models_dir, target_is_directory=True)
        base.models_dir.mkdir(parents=True, exist_ok=True)
        settings = Settings(home=Path(tmp), device=args.device, offline=True)
        out = {"benchmark": "train", "device": args.device, "threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count()}
        if not args.skip_sft:
            out.update(bench_sft(args, settings))
        if not args.skip_reward:
            out.update(bench_reward(args, settings))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
