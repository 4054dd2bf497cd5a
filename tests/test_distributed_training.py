"""The four trainers on two CPU processes (DDP over gloo), launched the way a user launches them.

    pytest tests/test_distributed_training.py -q        # about 3 minutes on 2 CPU cores

SFT and PPO run as ``gpt-demo ... --processes 2``, reward and DPO as ``accelerate launch --multi_gpu
--num_processes 2 -m gpt_demo ...``: real subprocesses on the real default model, a few steps each.
Every run must show, in the ``ranks.json`` the main process writes beside the adapter, that both
ranks trained, on different rows, and ended with the same weights (DDP averaged their gradients);
the loss must fall (the reward, for PPO, is checked as the mean of both ranks' rewards), and exactly
one adapter must be written, which then loads.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("trl")
pytest.importorskip("accelerate")

WORLD = 2
KL_BOUND = 5.0  # as tests/test_training.py: the policy may move, but stays leashed to the reference
TOPICS = ["the weather", "my homework", "a good book", "the train times", "a recipe for soup", "my printer",
          "learning French", "a birthday gift", "the museum hours", "fixing a flat tyre", "a movie tonight",
          "my garden", "the best route to town", "saving money", "a cold", "my cat"]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs(n: int) -> list[dict]:
    return [{"prompt": f"Can you help me with {t}?",
             "chosen": f"Of course! I'd be happy to help you with {t}. Thank you for asking.",
             "rejected": f"Ugh, {t}? Figure it out yourself, idiot."} for t in TOPICS[:n]]


def accelerate_launch() -> list[str]:
    """``accelerate launch`` from this interpreter's environment (the console script, else its module)."""
    script = Path(sys.executable).with_name("accelerate")
    return [str(script), "launch"] if script.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]


def launch_flags() -> list[str]:
    """What the README's command passes: two local processes, torchrun's launcher, a free port."""
    from gpt_demo.training.launch import free_port

    return ["--multi_gpu", "--num_processes", str(WORLD), "--num_machines", "1", "--main_process_port",
            str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]


def run(argv: list[str], home: Path, timeout: int = 480) -> dict:
    """Run one training command in a subprocess with ``home`` as GPT_DEMO_HOME; its one JSON report."""
    env = {**os.environ, "GPT_DEMO_HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-6000:]
    reports = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1, proc.stdout  # one report, from the main process only
    return json.loads(reports[0])


def make_home(root: Path, session_home: Path) -> Path:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    (session_home / "models").mkdir(exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def model_cache(session_home):
    """The packaged GGUF converted once, in this process, before any launch reads it."""
    from gpt_demo.config import DEFAULT_MODEL
    from gpt_demo.models.gguf_cache import ensure_cache
    from gpt_demo.models.registry import resolve_model

    source = resolve_model(DEFAULT_MODEL, offline=True)
    if source.is_gguf:
        ensure_cache(Path(source.location), session_home / "models", progress=False)


def settings_for(home: Path):
    from gpt_demo.config import Settings

    return Settings(home=home, device="cpu", offline=True)


def check_ranks(out: Path, n_rows: int, per_rank: int) -> dict:
    """Both ranks trained on ``per_rank`` rows each, none shared, and ended with the same trainable weights."""
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["world_size"] == WORLD and ranks["backend"] == "gloo"
    assert [r["rank"] for r in ranks["ranks"]] == list(range(WORLD))
    seen = [r["indices"] for r in ranks["ranks"]]
    assert [len(s) for s in seen] == [per_rank] * WORLD == ranks["examples_per_rank"], seen
    assert all(r["unmatched"] == 0 for r in ranks["ranks"])  # every batch row is a row of the training set
    assert not set(seen[0]) & set(seen[1]), seen  # different shards
    assert all(0 <= i < n_rows for s in seen for i in s) and len(set(seen[0]) | set(seen[1])) == WORLD * per_rank
    digests = {r["trainable_sha256"] for r in ranks["ranks"]}
    assert len(digests) == 1, ranks["ranks"]  # DDP kept the replicas identical
    card = json.loads((out / "card.json").read_text())
    assert card["distributed"] == {"world_size": WORLD, "backend": "gloo", "examples_per_rank": [per_rank] * WORLD}
    return ranks


def curve(out: Path, key: str) -> list[float]:
    with open(out / "curves.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [float(r[key]) for r in rows]


def one_new_adapter(home: Path, name: str, before: set[str] = frozenset()) -> Path:
    """``name`` is the only adapter this run added, with one weights file and no checkpoints left."""
    from gpt_demo.models.adapters import list_adapters

    names = {a.name for a in list_adapters(settings_for(home))}
    assert names - set(before) == {name}, names
    out = home / "adapters" / name
    assert [p.name for p in out.rglob("adapter_model.safetensors")] == ["adapter_model.safetensors"]
    assert not (out / "checkpoints").exists()
    return out


# -- the --processes bridge (no training) ---------------------------------------------------------
def test_processes_flag_relaunches_the_same_command_through_accelerate():
    from gpt_demo.cli import build_parser
    from gpt_demo.training.launch import command_argv, launch_argv
    from gpt_demo.training.ppo_config import PPOTrainConfig

    argv = ["ppo", "--prompts", "p.txt", "--out", "x", "--reward", "rm", "--processes", "2", "--steps", "3",
            "--no-progress", "--beta", "0.1", "--json"]
    args = build_parser().parse_args(argv)
    again = command_argv("ppo", "--prompts", args, PPOTrainConfig)
    assert "--processes" not in again
    reparsed = build_parser().parse_args(again)
    for key in ("prompts", "out", "reward", "steps", "progress", "beta", "json"):
        assert getattr(reparsed, key) == getattr(args, key), key
    assert reparsed.processes == 1
    launch = launch_argv(2, again)
    assert launch[:3] == ["--multi_gpu", "--num_processes", "2"] and launch[launch.index("-m") + 1] == "gpt_demo"


# -- SFT, reward, DPO, PPO on two processes -------------------------------------------------------
@pytest.mark.slow
def test_sft_on_two_processes(tmp_path, session_home, model_cache):
    from gpt_demo.api import load_engine

    home = make_home(tmp_path, session_home)
    rows = [{"prompt": f"What is {i} plus {i}?", "completion": f"{i} plus {i} is {2 * i}."} for i in range(16)]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    steps, batch = 3, 2
    result = run([sys.executable, "-m", "gpt_demo", "sft", str(data), "--out", "dist-sft", "--processes", str(WORLD),
                  "--device", "cpu", "--max-steps", str(steps), "--batch-size", str(batch), "--max-length", "48",
                  "--learning-rate", "1e-3", "--no-progress", "--json"], home)
    m = result["metrics"]
    assert m["steps"] == steps and m["loss_after"] < m["loss_before"], m
    out = one_new_adapter(home, "dist-sft")
    check_ranks(out, len(rows), steps * batch)
    assert [int(s) for s in curve(out, "step")] == [1, 2, 3]  # one writer: the main process
    tuned = load_engine(settings=settings_for(home), adapter="dist-sft", progress=False, decode="float")
    assert tuned.describe()["adapter"] == "dist-sft"


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, session_home, model_cache):
    """A reward model trained under ``accelerate launch`` (its test below; PPO then uses it)."""
    root = tmp_path_factory.mktemp("dist-reward")
    home = make_home(root, session_home)
    data = write_jsonl(root / "pairs.jsonl", pairs(16))
    result = run([*accelerate_launch(), *launch_flags(), "-m", "gpt_demo", "reward", str(data), "--out", "dist-rm",
                  "--device", "cpu", "--max-steps", "3", "--batch-size", "2", "--max-length", "64",
                  "--learning-rate", "5e-4", "--eval-fraction", "0.25", "--no-progress", "--json"], home)
    return result, home


@pytest.mark.slow
def test_reward_model_on_two_processes(reward_run):
    from gpt_demo.training.reward import RewardModel

    result, home = reward_run
    m = result["metrics"]
    assert m["train_pairs"] == 12 and m["eval_pairs"] == 4 and m["steps"] == 3, m
    out = one_new_adapter(home, "dist-rm")
    check_ranks(out, m["train_pairs"], 3 * 2)
    loss = curve(out, "loss")
    assert loss[-1] < loss[0], loss
    rm = RewardModel.load("dist-rm", settings_for(home), device="cpu")
    polite, rude = pairs(1)[0]["chosen"], pairs(1)[0]["rejected"]
    assert len(rm.score(["Can you help me with my bike?"] * 2, [polite, rude])) == 2


@pytest.mark.slow
def test_dpo_on_two_processes(tmp_path, session_home, model_cache):
    from gpt_demo.api import load_engine

    home = make_home(tmp_path, session_home)
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(8))
    result = run([*accelerate_launch(), *launch_flags(), "-m", "gpt_demo", "dpo", str(data), "--out", "dist-dpo",
                  "--device", "cpu", "--max-steps", "2", "--batch-size", "2", "--max-length", "64",
                  "--learning-rate", "5e-4", "--no-progress", "--json"], home)
    m = result["metrics"]
    assert m["pairs"] == 8 and m["margin_after"] > m["margin_before"], m  # both ranks' shares of the pairs
    out = one_new_adapter(home, "dist-dpo")
    check_ranks(out, 8, 2 * 2)
    loss = curve(out, "loss")
    assert loss[-1] < loss[0], loss  # DPO's first loss is log 2 (policy = reference)
    tuned = load_engine(settings=settings_for(home), adapter="dist-dpo", progress=False, decode="float")
    assert tuned.describe()["adapter"] == "dist-dpo"


@pytest.mark.slow
def test_ppo_on_two_processes(reward_run):
    """Rollouts per rank on its own prompts, updates averaged by DDP; the logged reward is both ranks' mean.

    A rise in reward over three tiny iterations is noise on two CPU processes, so (as the single-
    process test bounds it) the KL stays leashed, and the mean over ranks is checked step by step.
    """
    from gpt_demo.api import load_engine

    _, home = reward_run
    prompts = home / "prompts.txt"
    prompts.write_text("".join(f"Can you help me with {t}?\n" for t in TOPICS[:12]), encoding="utf-8")
    steps, batch = 3, 2
    result = run([sys.executable, "-m", "gpt_demo", "ppo", "--prompts", str(prompts), "--reward", "dist-rm",
                  "--out", "dist-ppo", "--processes", str(WORLD), "--device", "cpu", "--steps", str(steps),
                  "--batch-size", str(batch), "--mini-batch-size", "2", "--ppo-epochs", "1", "--max-new-tokens", "8",
                  "--learning-rate", "3e-4", "--eval-samples", "4", "--no-progress", "--json"], home)
    m = result["metrics"]
    assert m["steps"] == steps and m["kl_max"] < KL_BOUND, m
    assert all(v == v for v in (m["reward_before"], m["reward_after"], m["reward_last"]))  # finite, not NaN
    out = one_new_adapter(home, "dist-ppo", before={"dist-rm"})
    ranks = check_ranks(out, 12, steps * batch)
    per_rank = [r["rewards"] for r in ranks["ranks"]]
    logged = curve(out, "reward")
    assert logged == pytest.approx([(a + b) / 2 for a, b in zip(*per_rank)], abs=1e-5)
    assert logged[0] == pytest.approx(m["reward_first"], abs=1e-6)
    assert (out / "value_head.safetensors").is_file()
    tuned = load_engine(settings=settings_for(home), adapter="dist-ppo", progress=False, decode="float")
    assert tuned.describe()["adapter"] == "dist-ppo"
