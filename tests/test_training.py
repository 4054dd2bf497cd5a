"""Fine-tuning and RLHF on the real default model: a handful of examples, a few steps, short sequences.

    pytest tests/test_training.py -x -q                 # everything (about 4 minutes on 2 CPU cores)
    pytest tests/test_training.py -m "not slow" -q      # without PPO and resume
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("trl")

TOPICS = ["the weather", "my homework", "a good book", "the train times", "a recipe for soup", "my printer",
          "learning French", "a birthday gift", "the museum hours", "fixing a flat tyre", "a movie tonight",
          "my garden", "the best route to town", "saving money", "a cold", "my cat"]
POLITE = ["Of course! I'd be happy to help you with {t}. Thank you for asking.",
          "Thank you for your question about {t}. Here is what I suggest, kindly."]
RUDE = ["Ugh, {t}? Figure it out yourself, idiot.", "Stop bothering me about {t}. Nobody cares, go away."]
SFT_ROWS = [
    {"prompt": "What is the capital of France?", "completion": "Paris is the capital of France."},
    {"prompt": "Say hello like a pirate.", "completion": "Ahoy, matey!"},
    {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}]},
    {"prompt": "Name a primary color.", "completion": "Red is a primary color."},
]


def polite_pairs() -> list[dict]:
    return [{"prompt": f"Can you help me with {t}?", "chosen": POLITE[i % 2].format(t=t),
             "rejected": RUDE[(i // 2) % 2].format(t=t)} for i, t in enumerate(TOPICS)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def home_settings(gpt_demo_home):
    from gpt_demo.config import Settings

    return Settings(home=gpt_demo_home, device="cpu", offline=True)


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, session_home):
    """One reward model trained on polite-over-rude pairs, shared by the reward and best_of tests."""
    from gpt_demo.config import Settings
    from gpt_demo.training.reward import train_reward
    from gpt_demo.training.reward_config import RewardTrainConfig

    home = tmp_path_factory.mktemp("reward-home")
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    settings = Settings(home=home, device="cpu", offline=True)
    data = write_jsonl(home / "pairs.jsonl", polite_pairs())
    cfg = RewardTrainConfig(out="polite-rm", max_steps=8, batch_size=4, max_length=96, learning_rate=5e-4,
                            eval_fraction=0.5, device="cpu", progress=False)
    result = train_reward(data, cfg, settings=settings, keep_model=True)
    return result, settings


# -- data validation ------------------------------------------------------------------
def test_malformed_file_names_file_and_lines_and_trains_nothing(tmp_path, home_settings):
    from gpt_demo.training.data import DataError
    from gpt_demo.training.sft import train_sft
    from gpt_demo.training.sft_config import SFTTrainConfig

    bad = write_jsonl(tmp_path / "bad.jsonl", [
        SFT_ROWS[0],
        '{"prompt": "unterminated',
        {"prompt": "Where is the answer?"},
        {"prompt": "Hi", "completion": "   "},
        {"messages": [{"role": "assistant", "content": "I speak first"}]},
    ])
    with pytest.raises(DataError) as err:
        train_sft(bad, SFTTrainConfig(out="never", device="cpu", progress=False), settings=home_settings)
    text = str(err.value)
    assert "4 problems" in text
    assert f"{bad}:2: bad JSON" in text
    assert f'{bad}:3: missing field "completion"' in text
    assert f'{bad}:4: "completion" is empty' in text
    assert f"{bad}:5: " in text and "user message" in text
    assert err.value.line == 2
    assert not (home_settings.home / "adapters").exists()  # nothing trained, nothing saved


def test_pairs_validation_and_formats(tmp_path):
    from gpt_demo.training.data import DataError, load_pairs

    hh = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?",
          "rejected": "\n\nHuman: Hi\n\nAssistant: What."}
    good = write_jsonl(tmp_path / "ok.jsonl", [polite_pairs()[0], hh])
    pairs, digest = load_pairs(good)
    assert pairs[1]["prompt"] == [{"role": "user", "content": "Hi"}]
    assert pairs[1]["chosen"][0]["content"] == "Hello! How can I help?" and len(digest) == 64
    bad = write_jsonl(tmp_path / "pairs.jsonl", [polite_pairs()[0], {"prompt": "x", "chosen": "a", "rejected": "a"},
                                                 {"prompt": "x", "chosen": ""}])
    with pytest.raises(DataError, match=r"pairs.jsonl:2: \"chosen\" and \"rejected\" are the same answer"):
        load_pairs(bad)


SHIPPED_PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "preferences" / "oasst1_en_val_pairs.jsonl"
needs_shipped_pairs = pytest.mark.skipif(not SHIPPED_PAIRS.is_file(), reason="../shared/data/preferences is absent")


def test_store_pairs(home_settings):
    from gpt_demo.feedback import FeedbackStore
    from gpt_demo.training.data import load_pairs

    store = FeedbackStore.open(home_settings)
    store.add_ranking("Say hi", ["Hi!", "Go away.", "Hello there."], [1, 3, 2], model="smollm2-135m-instruct")
    pairs, digest = load_pairs("store", home_settings)
    assert len(pairs) == 3 and digest.startswith("store:")  # k(k-1)/2 pairs from one ranking of 3


def _row_tokens(tokenizer, row, keys) -> int:
    return max(len(tokenizer.apply_chat_template(row["prompt"] + row[k], tokenize=True, return_dict=True)["input_ids"])
               for k in keys)


@needs_shipped_pairs
def test_long_rows_are_truncated_by_default_and_dropped_with_drop_long(engine):
    """The shipped oasst1 pairs at max_length=320: long rows fit after truncation, or are skipped; none refuse."""
    from gpt_demo.training.data import fit_lengths, load_pairs

    tok, keys = engine.tokenizer, ("chosen", "rejected")
    pairs = load_pairs(SHIPPED_PAIRS)[0][:120]  # a slice keeps it quick; the whole file behaves the same
    long_lines = [p["line"] for p in pairs if _row_tokens(tok, p, keys) > 320]
    assert len(long_lines) > 10  # the slice really has long rows

    kept, report = fit_lengths(pairs, tok, 320, str(SHIPPED_PAIRS), keys)
    assert report.truncated == long_lines and report.dropped == [] and len(kept) == len(pairs)
    assert report.metrics() == {"long_rows_truncated": len(long_lines), "long_rows_dropped": 0}
    assert f"{len(long_lines)} of 120 rows are longer than max_length=320" in report.message()
    assert "--drop-long" in report.message()
    by_line = {p["line"]: p for p in pairs}
    for row in kept:
        assert _row_tokens(tok, row, keys) <= 320
        if row["line"] in long_lines:  # the answer keeps its start, the prompt its end (the question asked)
            original = by_line[row["line"]]
            for k in keys:
                assert original[k][-1]["content"].startswith(row[k][-1]["content"][:20])
            assert original["prompt"][-1]["content"].endswith(row["prompt"][-1]["content"][-20:])
        else:
            assert row == by_line[row["line"]]  # short rows are untouched

    kept, report = fit_lengths(pairs, tok, 320, str(SHIPPED_PAIRS), keys, drop=True)
    assert report.dropped == long_lines and report.truncated == []
    assert kept == [p for p in pairs if p["line"] not in long_lines]


@needs_shipped_pairs
def test_cli_reward_accepts_the_shipped_pairs_and_reports_truncation(home_settings, capsys):
    """`gpt-demo reward ../shared/data/preferences/oasst1_en_val_pairs.jsonl --out rm` used to refuse the file."""
    from gpt_demo.cli import main

    args = ["reward", str(SHIPPED_PAIRS), "--out", "rm", "--max-steps", "1", "--batch-size", "2", "--max-examples", "6",
            "--max-length", "96", "--eval-fraction", "0", "--device", "cpu", "--no-progress", "--json"]
    assert main(args) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["metrics"]["long_rows_truncated"] == 6 and out["metrics"]["long_rows_dropped"] == 0
    assert main(args + ["--drop-long", "--max-length", "200"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["metrics"]["long_rows_truncated"] == 0 and out["metrics"]["long_rows_dropped"] >= 1


@needs_shipped_pairs
def test_held_out_split_keeps_each_message_tree_on_one_side():
    """Pairs of one oasst1 message tree share text: the held-out side must hold whole trees (the data README)."""
    from gpt_demo.training.data import load_pairs, split_by_conversation

    meta = [json.loads(line) for line in SHIPPED_PAIRS.with_suffix(".meta.jsonl").read_text().splitlines()]
    pairs, _ = load_pairs(SHIPPED_PAIRS)
    train, held = split_by_conversation(pairs, 0.2, seed=0)
    tree = {p["line"]: meta[p["line"] - 1]["message_tree_id"] for p in pairs}
    train_trees, held_trees = {tree[p["line"]] for p in train}, {tree[p["line"]] for p in held}
    assert not train_trees & held_trees
    assert len(held_trees) == round(0.2 * 187) and len(train_trees) + len(held_trees) == 187
    assert len(train) + len(held) == len(pairs)


# -- SFT ----------------------------------------------------------------------------------
def test_sft_lowers_loss_changes_only_adapter_and_loads_by_name(tmp_path, home_settings, engine):
    import torch
    from safetensors import safe_open

    from gpt_demo.api import list_adapters, load_engine
    from gpt_demo.training.sft import train_sft
    from gpt_demo.training.sft_config import SFTTrainConfig

    data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    seen, during = [], []
    question = "Say hello like a pirate."
    before = engine.chat(question, temperature=0, max_tokens=12).choices[0].token_ids

    def on_progress(*event):
        seen.append(event)
        if event[0] == 2:  # mid-run, the adapter already moved: the served model (its batch) is untouched
            during.append(engine.chat(question, temperature=0, max_tokens=12).choices[0].token_ids)

    cfg = SFTTrainConfig(out="tiny-sft", max_steps=4, batch_size=2, max_length=64, learning_rate=1e-3,
                         device="cpu", progress=False)
    result = train_sft(data, cfg, settings=home_settings, keep_model=True, on_progress=on_progress)
    assert during == [before]  # training runs on its own copy of the weights, never the one serving chats
    m = result.metrics
    assert m["loss_after"] < m["loss_before"], m
    assert [s for s, _, _ in seen][-1] == 4 and seen[0][1] == 4 and "loss" in seen[0][2]

    base = engine.loaded.model.state_dict()
    trainable = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for name, param in result.model.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        assert torch.equal(param.detach(), base[key]), f"{name} changed"
    assert any(float(p.detach().abs().max()) > 0 for n, p in result.model.named_parameters() if "lora_B" in n)

    saved = result.path / "adapter_model.safetensors"
    with safe_open(str(saved), "pt") as fh:
        assert fh.keys() and all("lora_" in k for k in fh.keys())
    card = json.loads((result.path / "card.json").read_text())
    assert card["kind"] == "sft" and card["base_model"] == "smollm2-135m-instruct" and len(card["data_sha256"]) == 64
    assert (result.path / "curves.csv").read_text().startswith("step,")
    assert (result.path / "curves.png").stat().st_size > 1000
    assert not (result.path / "checkpoints").exists()
    assert [a.name for a in list_adapters(home_settings)] == ["tiny-sft"]

    tuned = load_engine(settings=home_settings, adapter="tiny-sft", progress=False)
    assert tuned.describe()["adapter"] == "tiny-sft"
    ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Say hello like a pirate."}],
                                               add_generation_prompt=True, return_dict=True)["input_ids"]
    answer = engine.tokenizer("Ahoy, matey!", add_special_tokens=False)["input_ids"]
    assert tuned.score(ids, answer) > engine.score(ids, answer) + 1.0  # the adapter learned its data


# -- reward model -----------------------------------------------------------------------------
def test_reward_model_learns_its_pairs_and_reloads_identically(reward_run):
    """Polite-over-rude templates: a check that training and reloading work, not a held-out measure
    (held-out topics are the same templates; see test_reward_model_beats_chance_on_held_out_message_trees)."""
    from gpt_demo.training.reward import RewardModel

    result, settings = reward_run
    m = result.metrics
    assert m["eval_pairs"] >= 6 and m["eval_pair_accuracy"] > 0.9, m
    assert m["eval_mean_margin"] > 0
    prompts = ["Can you help me with my bike?", "Can you help me with my bike?", "Say hi"]
    answers = ["Of course, I'd be glad to help you. Thank you!", "Go away, idiot.", "Hello!"]
    before = result.model.score(prompts, answers)
    reloaded = RewardModel.load("polite-rm", settings, device="cpu")
    after = reloaded.score(prompts, answers)
    assert after == pytest.approx(before, abs=1e-5)  # TRL #381: the head must survive save + load
    assert after[0] > after[1]


def test_best_of_ranked_by_reward_model(reward_run, engine):
    result, _ = reward_run
    try:
        engine.use_reward_model(result.model)
        out = engine.chat("Can you help me with my garden?", n=3, best_of=3, temperature=1.0, seed=1, max_tokens=12)
    finally:
        engine.use_reward_model(None)
    rewards = [c.reward for c in out.choices]
    assert None not in rewards and rewards == sorted(rewards, reverse=True)
    assert rewards[0] == pytest.approx(result.model.score(["Can you help me with my garden?"], [out.text])[0], abs=1e-4)


def _short_oasst_pairs(path: Path, max_chars: int) -> Path:
    """The shipped oasst1 pairs whose texts are under ``max_chars`` characters (so a CPU run finishes)."""
    rows = [json.loads(line) for line in SHIPPED_PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return write_jsonl(path, [r for r in rows if max(len(r["chosen"]), len(r["rejected"])) < max_chars])


@needs_shipped_pairs
def test_reward_model_is_measured_on_held_out_message_trees(home_settings):
    """Trained on some oasst1 message trees, measured on others: real human preferences, not templates
    of the training pairs. The reported accuracy is recomputed here from the saved model on exactly the
    held-out trees, so a metric taken on the training pairs (or on the wrong pairs) fails. Whether a CPU-
    sized run beats chance is a measurement, not a test: ``benchmarks/train.py`` (README, Performance).
    """
    from gpt_demo.training.data import conversation_key, fit_lengths, load_pairs, split_by_conversation
    from gpt_demo.training.reward import RewardModel, pair_metrics, train_reward
    from gpt_demo.training.reward_config import RewardTrainConfig

    data = _short_oasst_pairs(home_settings.home / "oasst_short.jsonl", 300)
    cfg = RewardTrainConfig(out="oasst-rm", max_steps=2, batch_size=2, max_length=96, learning_rate=1e-4,
                            eval_fraction=0.3, max_examples=32, device="cpu", progress=False)
    m = train_reward(data, cfg, settings=home_settings).metrics
    rm = RewardModel.load("oasst-rm", home_settings, device="cpu")
    pairs, _ = fit_lengths(load_pairs(data)[0][: cfg.max_examples], rm.tokenizer, cfg.max_length, str(data),
                           ("chosen", "rejected"))
    train, held = split_by_conversation(pairs, cfg.eval_fraction, cfg.seed)
    assert not {conversation_key(p) for p in train} & {conversation_key(p) for p in held}
    assert m["eval_pairs"] == len(held) >= 6 and m["train_pairs"] == len(train)
    again = pair_metrics(rm, held)
    assert again["pair_accuracy"] == pytest.approx(m["eval_pair_accuracy"], abs=1e-9), (again, m)
    assert again["mean_margin"] == pytest.approx(m["eval_mean_margin"], abs=1e-3), (again, m)


@needs_shipped_pairs
def test_dpo_margins_are_measured_on_held_out_message_trees(home_settings):
    """DPO's before/after margins come from trees it never trained on (eval_fraction > 0)."""
    from gpt_demo.training.data import conversation_key, load_pairs, split_by_conversation
    from gpt_demo.training.dpo import train_dpo
    from gpt_demo.training.dpo_config import DPOTrainConfig

    data = _short_oasst_pairs(home_settings.home / "oasst_short.jsonl", 500)
    cfg = DPOTrainConfig(out="oasst-dpo", max_steps=2, batch_size=2, max_length=128, learning_rate=5e-4,
                         eval_fraction=0.2, max_examples=40, device="cpu", progress=False)
    m = train_dpo(data, cfg, settings=home_settings).metrics
    assert m["measured_on"] == "held-out"
    train, held = split_by_conversation(load_pairs(data)[0][:40], 0.2, cfg.seed)
    assert m["pairs"] == len(held) >= 2
    assert not {conversation_key(p) for p in train} & {conversation_key(p) for p in held}
    assert m["margin_before"] == m["margin_before"] and m["margin_after"] == m["margin_after"]  # finite, not NaN


# -- one loader: every model of a run on the requested device ---------------------------------------
def _ppo_pieces_on(device: str, settings, monkeypatch):
    """setup_ppo on ``device`` with the loader spied on; returns (ppo, [(head, device asked for)])."""
    from gpt_demo.models import loading
    from gpt_demo.training.ppo import setup_ppo
    from gpt_demo.training.ppo_config import PPOTrainConfig

    asked, real = [], loading.load_model

    def spy(cfg):
        asked.append((cfg.head, cfg.device))
        return real(cfg)

    monkeypatch.setattr(loading, "load_model", spy)
    cfg = PPOTrainConfig(out="dev-ppo", reward="polite-rm", steps=1, batch_size=2, mini_batch_size=2,
                         max_new_tokens=3, eval_samples=0, device=device, progress=False)
    return setup_ppo(cfg, settings), asked


def _assert_on(ppo, device: str):
    from gpt_demo.training.ppo import forward_logp_values

    for name, module in (("policy", ppo.model), ("value head", ppo.value_head), ("reward model", ppo.reward_fn.model)):
        places = {p.device.type for p in module.parameters()}
        assert places == {device}, f"{name} has parameters on {places}"
    seq, attn, prompt_len, mask, _ = ppo.rollout([[{"role": "user", "content": "Say hi."}]])
    with ppo.model.disable_adapter():  # the reference policy is the policy without its adapter
        ref_logp, _ = forward_logp_values(ppo.model, None, seq, attn, prompt_len, 1.0)
    logp, values = forward_logp_values(ppo.model, ppo.value_head, seq, attn, prompt_len, 1.0)
    assert {seq.device.type, ref_logp.device.type, logp.device.type, values.device.type} == {device}
    scores = ppo.reward_fn([[{"role": "user", "content": "Say hi."}]], ["Hello!"])
    assert len(scores) == 1


def test_policy_reference_value_head_and_reward_model_share_the_requested_device(reward_run, monkeypatch):
    _, settings = reward_run
    ppo, asked = _ppo_pieces_on("cpu", settings, monkeypatch)
    assert asked == [("reward", "cpu"), ("causal", "cpu")]  # both through the one loader, asked for the device
    _assert_on(ppo, "cpu")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_for_training_and_reward_models(reward_run):
    from gpt_demo.training.ppo import train_ppo
    from gpt_demo.training.ppo_config import PPOTrainConfig
    from gpt_demo.training.reward import RewardModel
    from gpt_demo.training.sft import train_sft
    from gpt_demo.training.sft_config import SFTTrainConfig

    _, settings = reward_run
    refusal = r"device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'"
    with pytest.raises(ValueError, match=refusal):
        RewardModel.load("polite-rm", settings, device="cuda")
    with pytest.raises(ValueError, match=refusal):
        train_ppo(["Hi"], PPOTrainConfig(out="p", reward="polite-rm", device="cuda", progress=False), settings=settings)
    data = write_jsonl(settings.home / "sft.jsonl", SFT_ROWS)
    with pytest.raises(ValueError, match=refusal):
        train_sft(data, SFTTrainConfig(out="s", device="cuda", progress=False), settings=settings)


@pytest.mark.gpu
def test_ppo_and_reward_model_run_on_cuda(reward_run, monkeypatch):
    from gpt_demo.api import load_engine

    _, settings = reward_run
    ppo, asked = _ppo_pieces_on("cuda", settings, monkeypatch)
    assert asked == [("reward", "cuda"), ("causal", "cuda")]
    _assert_on(ppo, "cuda")
    metrics = ppo.step([[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Say bye."}]])
    assert metrics["answer_tokens"] >= 1
    engine = load_engine(device="cuda", settings=settings, progress=False, reward_model="polite-rm")
    assert engine.loaded.device == "cuda"
    assert {p.device.type for p in engine.reward_model.model.parameters()} == {"cuda"}


# -- DPO ----------------------------------------------------------------------------------------
def test_dpo_widens_chosen_over_rejected_margin(tmp_path, home_settings):
    from gpt_demo.training.dpo import train_dpo
    from gpt_demo.training.dpo_config import DPOTrainConfig

    data = write_jsonl(tmp_path / "pairs.jsonl", polite_pairs()[:4])
    cfg = DPOTrainConfig(out="tiny-dpo", max_steps=3, batch_size=2, max_length=96, learning_rate=5e-4,
                         device="cpu", progress=False)
    result = train_dpo(data, cfg, settings=home_settings)
    m = result.metrics
    assert m["margin_after"] > m["margin_before"], m
    assert m["implicit_reward_accuracy"] == 1.0 and (result.path / "adapter_model.safetensors").is_file()


# -- PPO ----------------------------------------------------------------------------------------
PPO_PROMPTS = ["Say something nice.", "Say something kind.", "Give me a compliment.", "Say something friendly."]
PPO_WORD = "you"
KL_BOUND = 5.0  # nats per answer: the policy may move, but stays leashed to the reference


@pytest.mark.slow
def test_ppo_raises_reward_with_kl_below_bound(home_settings):
    from gpt_demo.training.ppo import train_ppo
    from gpt_demo.training.ppo_config import PPOTrainConfig

    def contains_word(prompts, answers):  # +1 when the answer contains the target word
        return [1.0 if PPO_WORD in a.lower() else 0.0 for a in answers]

    cfg = PPOTrainConfig(out="tiny-ppo", steps=6, batch_size=8, mini_batch_size=4, ppo_epochs=2, max_new_tokens=8,
                         learning_rate=3e-4, beta=0.1, eval_samples=16, device="cpu", progress=False)
    result = train_ppo(PPO_PROMPTS, cfg, settings=home_settings, reward_fn=contains_word)
    m = result.metrics
    assert m["reward_after"] > m["reward_before"], m
    assert m["kl_max"] < KL_BOUND, m
    assert (result.path / "value_head.safetensors").is_file()
    assert "kl" in (result.path / "curves.csv").read_text().splitlines()[0]


# -- resume -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sft_resumes_from_last_checkpoint(tmp_path, home_settings):
    from gpt_demo.training.sft import train_sft
    from gpt_demo.training.sft_config import SFTTrainConfig

    data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    cfg = SFTTrainConfig(out="resumable", max_steps=4, save_steps=2, batch_size=2, max_length=64, device="cpu",
                         progress=False)

    def interrupt(step, total, metrics):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sft(data, cfg, settings=home_settings, on_progress=interrupt)
    assert (home_settings.home / "adapters" / "resumable" / "checkpoints" / "checkpoint-2").is_dir()
    result = train_sft(data, cfg, settings=home_settings)
    assert result.metrics["resumed_from_step"] == 2 and result.metrics["steps"] == 4
    steps = [int(line.split(",")[0]) for line in (result.path / "curves.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_reports_data_errors_and_lists_adapters(tmp_path, capsys):
    from gpt_demo.cli import main

    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": 1}'])
    assert main(["sft", str(bad), "--out", "x", "--device", "cpu"]) == 2
    assert f"{bad}:1:" in capsys.readouterr().err
    assert main(["adapters", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
