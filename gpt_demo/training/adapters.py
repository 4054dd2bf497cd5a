"""Writing trained adapters: the JSON card and peft's safetensors layout under ``$GPT_DEMO_HOME/adapters/NAME``.

    >>> from gpt_demo.training.adapters import list_adapters
    >>> [a.name for a in list_adapters()]                  # doctest: +SKIP
    ['my-sft', 'my-rm', 'my-ppo']

Finding, listing and loading adapters lives in ``gpt_demo.models.adapters`` (the one loader); its
names are re-exported here for callers that think of adapters as a training product.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..models.adapters import (CARD, CHAT_KINDS, KINDS, AdapterInfo, adapter_path, adapters_dir,  # noqa: F401
                               apply_adapter, delete_adapter, find_adapter, list_adapters, read_card, write_card)


def make_card(kind: str, cfg, base_model: str, data: str, data_sha256: str, metrics: dict, **extra) -> dict:
    import peft
    import transformers
    import trl

    return {
        "name": cfg.out,
        "kind": kind,
        "base_model": base_model,
        "init_adapter": cfg.init_adapter or None,
        "quantize": cfg.quantize,
        "data": str(data),
        "data_sha256": data_sha256,
        "params": cfg.to_dict(),
        "metrics": metrics,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"peft": peft.__version__, "trl": trl.__version__, "transformers": transformers.__version__},
        **extra,
    }


def save_adapter(model, path: Path, card: dict) -> Path:
    """LoRA weights as safetensors (peft's layout) plus the card; returns the directory."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    write_card(path, card)
    return path
