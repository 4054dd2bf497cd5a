"""The layering rule: the core never imports a front-end library (gradio, IPython, ipywidgets, fastapi).

    .venv/bin/python -m pytest tests/test_layering.py -q

Each check runs in a fresh interpreter, because this test process has imported the front-ends already.
Imports made inside functions count too: the core's entry points run for real (the default model,
MiniLM, the moderation head, the rankings store, training configs) before ``sys.modules`` is read.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gpt_demo"
FRONT_END_LIBRARIES = ("gradio", "IPython", "ipywidgets", "fastapi")
FRONT_END_PACKAGES = ("gpt_demo.web", "gpt_demo.notebook", "gpt_demo.server")
NOT_IMPORTABLE = ("gpt_demo.__main__",)  # runs the command line when imported

# Looks at sys.modules after every step, so a failure names the step that pulled a library in.
_PROBE = """
import json, sys
BAD = {bad!r}

def loaded():
    return sorted({{m.split(".")[0] for m in sys.modules}} & set(BAD))

report = []
def step(name, func):
    before = loaded()
    func()
    after = loaded()
    if after != before:
        report.append([name, [m for m in after if m not in before]])
"""


def core_modules() -> list[str]:
    """Every module under gpt_demo except the front-end packages (found on disk, so new ones count)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name in NOT_IMPORTABLE or any(name == p or name.startswith(p + ".") for p in FRONT_END_PACKAGES):
            continue
        names.append(name)
    return names


def run_probe(body: str, timeout: int = 600) -> list:
    code = _PROBE.format(bad=FRONT_END_LIBRARIES) + body + "\nprint('REPORT', json.dumps(report))\n"
    env = {**os.environ, "GPT_DEMO_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("REPORT "):])


def test_the_core_module_list_is_complete():
    names = core_modules()
    for expected in ("gpt_demo", "gpt_demo.api", "gpt_demo.cli", "gpt_demo.engine_cache", "gpt_demo.flags",
                     "gpt_demo.inspect.attention", "gpt_demo.moderation.train", "gpt_demo.training.ppo",
                     "gpt_demo.feedback.store", "gpt_demo.models.loading", "gpt_demo.generation.decoding"):
        assert expected in names
    assert not [n for n in names if n.startswith(("gpt_demo.web", "gpt_demo.notebook"))]


def test_every_core_module_imports_without_the_front_end_libraries():
    """Each module imports with gradio, IPython, ipywidgets and fastapi made unimportable, and pulls none in."""
    modules = core_modules()
    body = f"""
import importlib, importlib.abc

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BAD:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the layering test)", name=name)
        return None

sys.meta_path.insert(0, Block())
for name in {modules!r}:
    step("import " + name, lambda name=name: importlib.import_module(name))
"""
    assert run_probe(body) == []


def test_the_core_entry_points_import_no_front_end_library(engine, tmp_path):
    """Real calls, so an import inside a function counts: chat, look inside, embed, moderate, store, train configs."""
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "What is 1 plus 1?", "completion": "2."}) + "\n")
    body = f"""
from gpt_demo import api
from gpt_demo.config import Settings

settings = Settings.from_env(device="cpu", offline=True)
holder = {{}}
step("load_engine", lambda: holder.update(engine=api.load_engine(settings=settings, progress=False)))
engine = holder["engine"]
step("chat", lambda: engine.chat("Hi", temperature=0, max_tokens=3))
step("stream_chat", lambda: "".join(engine.stream_chat("Hi", temperature=0, max_tokens=3)))
step("complete best_of", lambda: engine.complete("The sky is", max_tokens=3, n=1, best_of=2, seed=0))
step("next_tokens", lambda: engine.next_tokens("The capital of France is", top_k=3))
step("step", lambda: engine.step("The capital of France is", temperature=0))
step("attention", lambda: engine.attention("The animal was tired because it ran", layer=1))
step("strongest_heads", lambda: engine.strongest_heads("The animal was tired because it ran", "it", "animal"))
step("score", lambda: engine.score([1, 2, 3], [4, 5]))
step("embed chat", lambda: engine.embed(["a cat", "a dog"], model="chat"))
step("embed minilm", lambda: api.embed(["a cat", "a kitten"]))
step("search", lambda: api.search("feline", ["a cat", "a car"], top_k=1))
step("project", lambda: api.project(["a cat", "a dog", "a car"], dims=2))
step("moderate", lambda: api.moderate(["I want to kill him", "hello there"]))
step("gate", lambda: api.gate("hello there", "block"))

def store_write():
    from gpt_demo.feedback import FeedbackStore

    store = FeedbackStore.open(settings)
    store.add_ranking("Say hi", ["Hi!", "Go away."], [1, 2], model=engine.model_name)
    store.export({str(tmp_path / "pairs.jsonl")!r})
    store.close()
step("feedback store write and export", store_write)

def train_configs():
    from gpt_demo.training.common import lora_config
    from gpt_demo.training.data import load_pairs, load_sft
    from gpt_demo.training.dpo_config import DPOTrainConfig
    from gpt_demo.training.ppo_config import PPOTrainConfig
    from gpt_demo.training.reward_config import RewardTrainConfig
    from gpt_demo.training.sft_config import SFTTrainConfig

    cfg = SFTTrainConfig(out="layering", max_steps=1)
    lora_config(cfg, "CAUSAL_LM")
    RewardTrainConfig(out="rm"), DPOTrainConfig(out="dpo"), PPOTrainConfig(out="ppo", reward="rm")
    load_sft({str(data)!r}), load_pairs("store", settings)
    api.list_adapters(settings)
step("training configs, LoRA config, data loading", train_configs)

def engine_cache():
    cache = api.EngineCache(base=engine, settings=settings, progress=False)
    cache.describe(), cache.summary(), cache.memory_bytes(), cache.with_adapter(None)
step("engine cache", engine_cache)

def moderation_config():
    from gpt_demo.moderation.config import TrainConfig

    TrainConfig()
step("moderation training config", moderation_config)

def command_line():
    from gpt_demo.cli import main

    main(["models", "--json"])
    for argv in (["--help"], ["serve", "--help"], ["sft", "--help"], ["feedback", "--help"], ["jupyter", "--help"]):
        try:
            main(argv)
        except SystemExit:
            pass
step("the command line (parsing every subcommand's flags)", command_line)
"""
    assert run_probe(body) == []


def test_no_module_imports_the_command_line_helpers():
    """The front-ends share flags through gpt_demo.flags; only ``python -m gpt_demo`` imports gpt_demo.cli."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or path == PACKAGE / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "cli" and (
                    node.level or node.module == "gpt_demo.cli"):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name == "gpt_demo.cli" for a in node.names):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []
