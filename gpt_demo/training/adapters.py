"""Trained adapters on disk: ``$GPT_DEMO_HOME/adapters/NAME/`` holds the LoRA weights as safetensors
(``adapter_model.safetensors`` + peft's ``adapter_config.json``), a JSON card, and the curves.

    >>> from gpt_demo.training.adapters import list_adapters
    >>> [a.name for a in list_adapters()]                  # doctest: +SKIP
    ['my-sft', 'my-rm', 'my-ppo']

The card (``card.json``) says what the adapter is: kind (sft | reward | ppo | dpo), base model,
the adapter merged in first (``init_adapter``), data file and its sha256, parameters, final metrics.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

CARD = "card.json"
KINDS = ("sft", "reward", "ppo", "dpo")
CHAT_KINDS = ("sft", "ppo", "dpo")


@dataclass
class AdapterInfo:
    """One saved adapter, for listing (``gpt-demo adapters``, the web picker)."""

    name: str
    path: Path
    kind: str
    base_model: str
    created_at: str = ""
    metrics: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "kind": self.kind, "base_model": self.base_model,
                "created_at": self.created_at, "metrics": self.metrics}


def adapters_dir(settings=None) -> Path:
    """``$GPT_DEMO_HOME/adapters``; ``settings`` may also be that directory itself (a path)."""
    from ..config import Settings

    if isinstance(settings, (str, Path)):
        return Path(settings)
    return Path((settings or Settings.from_env()).home) / "adapters"


def adapter_path(name: str, settings=None) -> Path:
    """The directory of adapter ``name`` (a name under $GPT_DEMO_HOME/adapters, or a path to a directory)."""
    from .base_config import NAME_RE

    if not isinstance(name, str) or not name:
        raise ValueError(f"adapter={name!r} is not allowed; give an adapter name (see `gpt-demo adapters`)")
    candidate = Path(name).expanduser()
    if ("/" in name or name.startswith(".")) and candidate.is_dir():
        return candidate
    if not NAME_RE.match(name):
        raise ValueError(f"adapter={name!r} is not allowed; give an adapter name or an existing directory")
    return adapters_dir(settings) / name


def read_card(path: Path) -> dict:
    card_file = Path(path) / CARD
    if not card_file.is_file():
        raise ValueError(f"adapter={Path(path).name!r}: no {CARD} in {path}; is this a gpt-demo adapter? "
                         "(see `gpt-demo adapters`)")
    return json.loads(card_file.read_text(encoding="utf-8"))


def find_adapter(name: str, settings=None) -> tuple[Path, dict]:
    """(directory, card) of an existing adapter, or a ValueError listing the ones there are."""
    path = adapter_path(name, settings)
    if not (path / CARD).is_file():
        known = ", ".join(a.name for a in list_adapters(settings)) or "none yet"
        raise ValueError(f"adapter={name!r} not found under {path.parent}; known: {known}")
    return path, read_card(path)


def write_card(path: Path, card: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (CARD + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path / CARD)


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


def list_adapters(settings=None) -> list[AdapterInfo]:
    """Every adapter with a card under $GPT_DEMO_HOME/adapters, newest first."""
    root = adapters_dir(settings)
    found = []
    for card_file in sorted(root.glob(f"*/{CARD}")) if root.is_dir() else []:
        try:
            card = json.loads(card_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        found.append(AdapterInfo(card_file.parent.name, card_file.parent, card.get("kind", "?"),
                                 card.get("base_model", "?"), card.get("created_at", ""), card.get("metrics", {}), card))
    return sorted(found, key=lambda a: a.created_at, reverse=True)


def delete_adapter(name: str, settings=None) -> None:
    path, _ = find_adapter(name, settings)
    shutil.rmtree(path)


def apply_adapter(model, name: str, settings=None, *, merge: bool = True, allow_reward: bool = False):
    """``model`` with chat adapter ``name`` on top (its ``init_adapter`` merged in first).

    ``merge=True`` folds LoRA into the weights (same outputs, full generation speed); quantized
    models keep the adapter unmerged. Returns (model, card).
    """
    from peft import PeftModel

    path, card = find_adapter(name, settings)
    if card.get("kind") == "reward" and not allow_reward:
        raise ValueError(f"adapter={name!r} is a reward model, not a chat adapter; load it with "
                         "api.load_reward_model(name) (or engine.use_reward_model) to rank best_of candidates")
    if card.get("init_adapter"):
        model, _ = apply_adapter(model, card["init_adapter"], settings, merge=True)
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    if merge and not quantized:
        model = model.merge_and_unload()
    model.eval()
    return model, card
