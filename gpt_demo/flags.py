"""Command-line flags shared by the front-ends: the CLI, ``gpt-demo serve`` and the notebook magics.

    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_model_flags(p); add_param_flags(p)
    >>> args = p.parse_args(["--temperature", "0", "--stop", "."])
    >>> param_values(args)
    {'temperature': 0.0, 'stop': ('.',)}
    >>> parse_thresholds(["violence=0.3"])
    {'violence': 0.3}

One table, so a flag's name, type and help cannot drift apart between the faces. This module
imports nothing heavy (``gpt-demo --help`` must not import torch) and nothing from a front-end.
"""

from __future__ import annotations

import argparse

from .config import DECODE_CHOICES, DEVICE_CHOICES, QUANTIZE_CHOICES

PARAM_FLAGS = {
    # flag: (GenerationParams field, type, help)
    "--temperature": ("temperature", float, "0-2; 0 is greedy"),
    "--top-p": ("top_p", float, "(0-1] nucleus sampling mass"),
    "--max-tokens": ("max_tokens", int, "most new tokens"),
    "--frequency-penalty": ("frequency_penalty", float, "-2 to 2"),
    "--presence-penalty": ("presence_penalty", float, "-2 to 2"),
    "--n": ("n", int, "number of answers"),
    "--best-of": ("best_of", int, "candidates; the n with the highest log-probability per token win"),
    "--seed": ("seed", int, "repeatable sampling"),
    "--top-logprobs": ("top_logprobs", int, "alternatives per token (implies logprobs, with --json)"),
    "--inject-start-text": ("inject_start_text", str, "text the answer starts from"),
    "--inject-restart-text": ("inject_restart_text", str, "text appended after the answer"),
}


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --quantize, --device, --adapter, --reward-model (the ``load_engine`` arguments)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help="registry name, hub id, local dir or .gguf (default: $GPT_DEMO_MODEL or "
                                   "smollm2-135m-instruct); or a remote OpenAI-compatible server: "
                                   "openai:URL#MODEL, vllm:#MODEL, llamacpp:URL, ollama:MODEL, gpt-demo:URL#MODEL")
    g.add_argument("--api-key-env", dest="api_key_env", metavar="NAME",
                   help="the environment variable holding a remote server's key (default: the kind's, "
                        "OPENAI_API_KEY for openai:); the key itself is never a flag")
    g.add_argument("--quantize", choices=QUANTIZE_CHOICES, help="bitsandbytes quantization (default: none)")
    g.add_argument("--device", choices=DEVICE_CHOICES, help="default: auto")
    g.add_argument("--decode", choices=DECODE_CHOICES,
                   help="weights generation runs on: auto (4-bit lean path on the CPU) | int4 | bf16 | float "
                        "(default: $GPT_DEMO_DECODE or auto)")
    g.add_argument("--adapter", help="a trained LoRA adapter to load on top (see `gpt-demo adapters`)")
    g.add_argument("--reward-model", dest="reward_model", metavar="NAME",
                   help="a reward adapter that ranks --best-of candidates instead of log-probability")


def add_param_flags(p: argparse.ArgumentParser, flags: dict | None = None, *, system: bool = True,
                    stop_help: str = "stop sequence (repeat up to 4 times)") -> None:
    """One option per entry of ``flags`` (default: all of ``PARAM_FLAGS``), plus --stop and --system."""
    g = p.add_argument_group("generation parameters (OpenAI names and ranges)")
    for flag, (dest, kind, text) in (PARAM_FLAGS if flags is None else flags).items():
        g.add_argument(flag, dest=dest, type=kind, help=text)
    g.add_argument("--stop", action="append", help=stop_help)
    if system:
        g.add_argument("--system", help="system prompt")


def param_values(args: argparse.Namespace, flags: dict | None = None) -> dict:
    """The generation parameters given on the command line, as ``GenerationParams`` field values."""
    table = PARAM_FLAGS if flags is None else flags
    values = {dest: getattr(args, dest) for dest, _, _ in table.values() if getattr(args, dest, None) is not None}
    if getattr(args, "stop", None):
        values["stop"] = tuple(args.stop)
    return values


def parse_thresholds(items: list[str] | None, flag: str = "--threshold") -> dict | None:
    """``["violence=0.3", "hate=0.8"]`` -> {"violence": 0.3, "hate": 0.8} (validated by the moderation module)."""
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{flag} {item!r} is not allowed; write CATEGORY=NUMBER, e.g. violence=0.3") from None
        if not sep:
            raise ValueError(f"{flag} {item!r} is not allowed; write CATEGORY=NUMBER, e.g. violence=0.3")
    return out
