"""A fine-tuning job's settings, as OpenAI names them, turned into our trainers' configs (no torch here).

    >>> resolve_hyperparameters("supervised", {"n_epochs": 2, "batch_size": 4}, examples=8, max_steps=500)
    ({'batch_size': 4, 'learning_rate_multiplier': 1.0, 'n_epochs': 2}, 4)
    >>> resolve_hyperparameters("supervised", {"n_epochs": 60}, examples=8, max_steps=500)
    Traceback (most recent call last):
    ...
    ValueError: hyperparameters.n_epochs=60 is out of range; allowed: 1 <= n_epochs <= 50 or 'auto'
    >>> fine_tuned_model_id("smollm2-135m-instruct", "secret", "ftjob-abc")
    'ft:smollm2-135m-instruct:secret:ftjob-abc'

``"auto"`` (or leaving a value out) picks defaults sized for a small model on a CPU: 3 epochs,
batches of up to 4 examples, the trainer's own learning rate (SFT 2e-4, DPO 5e-5) and β = 0.1.
A job's optimiser steps, ``ceil(examples / batch_size) * n_epochs``, are bounded by
``Settings.limits.max_train_steps`` (``GPT_DEMO_MAX_TRAIN_STEPS``).
"""

from __future__ import annotations

import math
import re

METHODS = ("supervised", "dpo")
AUTO_EPOCHS = 3
AUTO_BATCH = 4
EPOCHS = (1, 50)
BATCH = (1, 256)
LR_MULTIPLIER = (0.0, 100.0)  # exclusive low bound
BETA = (0.0, 2.0)
SUFFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HYPER_FIELDS = {"supervised": ("n_epochs", "batch_size", "learning_rate_multiplier"),
                "dpo": ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")}


def base_learning_rate(kind: str) -> float:
    """The trainer's default learning rate, which ``learning_rate_multiplier`` scales."""
    from dataclasses import fields

    if kind == "dpo":
        from ..training.dpo_config import DPOTrainConfig as cls
    else:
        from ..training.sft_config import SFTTrainConfig as cls
    return next(f.default for f in fields(cls) if f.name == "learning_rate")


def _number(name: str, value, lo, hi, integer: bool, low_open: bool = False):
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not ((lo < value) if low_open else (lo <= value)) or value > hi:
        op = "<" if low_open else "<="
        raise ValueError(f"hyperparameters.{name}={value!r} is out of range; allowed: {lo:g} {op} {name} <= {hi:g}"
                         " or 'auto'")
    return value


def resolve_hyperparameters(kind: str, given: dict, *, examples: int, max_steps: int) -> tuple[dict, int]:
    """(the job's hyperparameters with every "auto" resolved, its optimiser steps); ValueError names the field."""
    if kind not in METHODS:
        raise ValueError(f"method.type={kind!r} is not supported; choose one of {', '.join(METHODS)}")
    given = dict(given or {})
    unknown = [k for k in given if k not in HYPER_FIELDS[kind]]
    if unknown:
        raise ValueError(f"hyperparameters.{unknown[0]} is not a {kind} hyperparameter; allowed: "
                         f"{', '.join(HYPER_FIELDS[kind])}")

    def pick(name, auto, check):
        value = given.get(name, "auto")
        return auto if value in ("auto", None) else check(name, value)

    out = {
        "n_epochs": pick("n_epochs", AUTO_EPOCHS, lambda n, v: _number(n, v, *EPOCHS, True)),
        "batch_size": pick("batch_size", max(1, min(AUTO_BATCH, examples)), lambda n, v: _number(n, v, *BATCH, True)),
        "learning_rate_multiplier": float(pick("learning_rate_multiplier", 1.0,
                                               lambda n, v: _number(n, v, *LR_MULTIPLIER, False, True))),
    }
    if kind == "dpo":
        out["beta"] = float(pick("beta", 0.1, lambda n, v: _number(n, v, *BETA, False, True)))
    out["n_epochs"] = int(out["n_epochs"])
    steps = math.ceil(examples / out["batch_size"]) * out["n_epochs"]
    if steps > max_steps:
        raise ValueError(f"hyperparameters.n_epochs={out['n_epochs']} with batch_size={out['batch_size']} over "
                         f"{examples} examples is {steps} optimiser steps; the limit is {max_steps} "
                         "(GPT_DEMO_MAX_TRAIN_STEPS): use fewer epochs or larger batches")
    return dict(sorted(out.items())), steps


def check_suffix(suffix) -> str | None:
    if suffix in (None, ""):
        return None
    if not isinstance(suffix, str) or not SUFFIX_RE.match(suffix):
        raise ValueError(f"suffix={suffix!r} is not allowed; give up to 64 letters, digits, '.', '_' or '-'")
    return suffix


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    """``ft:BASE:SUFFIX:JOBID``, OpenAI's naming without the organisation."""
    return f"ft:{base}:{suffix or ''}:{job_id}"


def train_config(kind: str, hyper: dict, *, steps: int, seed: int, model: str, device: str, quantize: str) -> dict:
    """Keyword config for ``gpt_demo.api.train_sft`` / ``train_dpo``: exactly ``steps`` steps, four checkpoints."""
    config = {
        "max_steps": steps, "epochs": float(hyper["n_epochs"]), "batch_size": hyper["batch_size"],
        "learning_rate": base_learning_rate("dpo" if kind == "dpo" else "sft") * hyper["learning_rate_multiplier"],
        "seed": seed, "save_steps": save_every(steps), "progress": False, "resume": False,
        "model": model, "device": device, "quantize": quantize,
    }
    if kind == "dpo":
        config["beta"] = hyper["beta"]
    return config


def save_every(steps: int) -> int:
    return max(1, steps // 4)
