"""``gpt-demo sft | reward | ppo | dpo | adapters``: the training workflows from the terminal.

    gpt-demo sft ../shared/data/sft/sft.jsonl --out oasst-sft --max-steps 50
    gpt-demo reward ../shared/data/preferences/oasst1_en_val_pairs.jsonl --out oasst-rm --max-steps 100
    gpt-demo reward store --out my-rm                      # pairs from the rankings store
    gpt-demo reward pairs.jsonl --out my-rm --max-length 320 --drop-long   # skip long rows (default: truncate)
    gpt-demo ppo --reward oasst-rm --prompts prompts.txt --out oasst-ppo --steps 20 --beta 0.05
    gpt-demo dpo store --out my-dpo --init-adapter oasst-sft
    gpt-demo adapters                                      # what is saved, with final metrics
    gpt-demo chat --adapter oasst-ppo                      # chat with it
    gpt-demo sft data.jsonl --out my-sft --device cpu --processes 2        # 2 CPU processes (DDP over gloo)
    accelerate launch --config_file ds.yaml -m gpt_demo dpo pairs.jsonl --out my-dpo   # any accelerate setup

Only argparse and the config dataclasses are imported here, so ``gpt-demo --help`` stays instant.
"""

from __future__ import annotations

import json
import sys

from .base_config import add_config_args, config_values
from .dpo_config import DPOTrainConfig
from .ppo_config import PPOTrainConfig
from .reward_config import RewardTrainConfig
from .sft_config import SFTTrainConfig


def _print_result(result, as_json: bool) -> int:
    if not getattr(result, "main_process", True):
        return 0  # the other ranks of a multi-process run: the main one reports
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
        return 0
    print(f"saved {result.kind} adapter {result.name!r} to {result.path}")
    for key, value in result.metrics.items():
        if value is not None:
            print(f"  {key:28s} {value:.4g}" if isinstance(value, float) else f"  {key:28s} {value}")
    for kind, path in result.curves.items():
        print(f"  curves ({kind}): {path}")
    return 0


def _run(func_name: str, module: str, cfg_cls, data, args) -> int:
    import importlib

    cfg = cfg_cls(**config_values(cfg_cls, args))
    processes = getattr(args, "processes", 1) or 1
    if processes < 1:
        raise ValueError(f"processes={processes} is not allowed; give an integer >= 1")
    if processes > 1:  # the same command again, on N processes, through accelerate's launcher
        from ..config import Settings
        from .launch import check_devices, command_argv, relaunch

        device = check_devices(processes, cfg.device if cfg.device != "auto" else Settings.from_env().device)
        name, data_arg = WORKFLOW_DATA[module]
        return relaunch(processes, command_argv(name, data_arg, args, cfg_cls), device)
    print(f"Training {cfg.kind} adapter {cfg.out!r}...", file=sys.stderr, flush=True)
    func = getattr(importlib.import_module(f"gpt_demo.training.{module}"), func_name)
    return _print_result(func(data, cfg), args.json)


def cmd_sft(args) -> int:
    return _run("train_sft", "sft", SFTTrainConfig, args.data, args)


def cmd_reward(args) -> int:
    return _run("train_reward", "reward", RewardTrainConfig, args.data, args)


def cmd_dpo(args) -> int:
    return _run("train_dpo", "dpo", DPOTrainConfig, args.data, args)


def cmd_ppo(args) -> int:
    return _run("train_ppo", "ppo", PPOTrainConfig, args.prompts, args)


def cmd_adapters(args) -> int:
    from ..models.adapters import delete_adapter, list_adapters

    if args.delete:
        delete_adapter(args.delete)
        print(f"deleted adapter {args.delete!r}")
        return 0
    found = list_adapters()
    if args.json:
        print(json.dumps([a.to_dict() for a in found]))
        return 0
    if not found:
        print("no adapters yet; train one with `gpt-demo sft DATA --out NAME`")
        return 0
    print(f"{'name':24s} {'kind':7s} {'base model':26s} {'created':21s} key metric")
    for a in found:
        key = next((k for k in ("eval_pair_accuracy", "reward_last", "margin_after", "loss_after") if a.metrics.get(k) is not None), None)
        metric = f"{key}={a.metrics[key]:.3g}" if key else ""
        print(f"{a.name:24s} {a.kind:7s} {a.base_model:26s} {a.created_at:21s} {metric}")
    return 0


WORKFLOW_DATA = {"sft": ("sft", "data"), "reward": ("reward", "data"), "ppo": ("ppo", "--prompts"),
                 "dpo": ("dpo", "data")}  # module -> (subcommand, its data argument)


def register(add) -> None:
    pairs_help = "JSONL with prompt/chosen/rejected (or hh-rlhf transcripts), or 'store' for the rankings store"
    workflows = [  # name, handler, help, (data argument, its help), config
        ("sft", cmd_sft, "LoRA supervised fine-tuning on prompt/completion or chat JSONL (--quantize 4bit: QLoRA).",
         ("data", "JSONL: {prompt, completion} or {messages: [...]} per line"), SFTTrainConfig),
        ("reward", cmd_reward, "Train a reward model on preference pairs; reports held-out pair accuracy and margin.",
         ("data", pairs_help), RewardTrainConfig),
        ("ppo", cmd_ppo, "PPO against a reward model with a per-token KL penalty to the reference.",
         ("--prompts", "JSONL ({prompt} or {messages}) or .txt (one prompt per line)"), PPOTrainConfig),
        ("dpo", cmd_dpo, "DPO from preference pairs (the reference is the model with the adapter disabled).",
         ("data", pairs_help), DPOTrainConfig),
    ]
    for name, func, text, (data_arg, data_help), cfg_cls in workflows:
        p = add(name, func, text)
        p.add_argument(data_arg, help=data_help, **({"required": True} if data_arg.startswith("--") else {}))
        p.add_argument("--out", required=True, help="adapter name (saved under $GPT_DEMO_HOME/adapters/NAME)")
        p.add_argument("--json", action="store_true", help="print the result as one JSON object")
        p.add_argument("--processes", type=int, default=1, metavar="N",
                       help="train on N processes (data parallel, via `accelerate launch`): N CPU processes with "
                            "--device cpu, N GPUs with cuda (default: 1, this process)")
        add_config_args(p, cfg_cls)

    p = add("adapters", cmd_adapters, "List trained adapters (name, kind, base model, metrics).")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--delete", metavar="NAME", help="delete adapter NAME")


