"""Trained adapters on disk and loading them onto a model: ``$GPT_DEMO_HOME/adapters/NAME/`` holds the LoRA
weights as safetensors (``adapter_model.safetensors`` + peft's ``adapter_config.json``), a JSON card, and
the curves.

    >>> from gpt_demo.models.adapters import list_adapters
    >>> [a.name for a in list_adapters()]                  # doctest: +SKIP
    ['my-sft', 'my-rm', 'my-ppo']

The card (``card.json``) says what the adapter is: kind (sft | reward | ppo | dpo), base model,
the adapter merged in first (``init_adapter``), data file and its sha256, parameters, final metrics.
Writing adapters is training's job (``gpt_demo.training.adapters``); finding and loading them is
here, so ``gpt_demo.models`` never imports ``gpt_demo.training``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CARD = "card.json"
KINDS = ("sft", "reward", "ppo", "dpo")
CHAT_KINDS = ("sft", "ppo", "dpo")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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


def apply_adapter(model, name: str, settings=None, *, head: str = "causal", merge: bool = True):
    """``model`` with adapter ``name`` on top (its ``init_adapter`` merged in first); returns (model, card).

    ``head="causal"`` takes a chat adapter (sft | ppo | dpo); ``merge=True`` folds LoRA into the weights
    (same outputs, full generation speed), except on quantized models. ``head="reward"`` takes a reward
    adapter, kept unmerged so a reloaded reward model scores exactly as the trained one.
    """
    from peft import PeftModel

    path, card = find_adapter(name, settings)
    kind = card.get("kind")
    if head == "causal" and kind == "reward":
        raise ValueError(f"adapter={name!r} is a reward model, not a chat adapter; load it with "
                         "api.load_reward_model(name) (or engine.use_reward_model) to rank best_of candidates")
    if head == "reward" and kind != "reward":
        raise ValueError(f"adapter={name!r} is a {kind} adapter, not a reward model; "
                         "train one with `gpt-demo reward DATA --out NAME`")
    if card.get("init_adapter"):
        model, _ = apply_adapter(model, card["init_adapter"], settings, head="causal", merge=True)
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    if merge and head == "causal" and not quantized:
        model = model.merge_and_unload()
    model.eval()
    return model, card
