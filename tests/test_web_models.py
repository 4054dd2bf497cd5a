"""Model pickers, the cross-model Arena and its leaderboard, over HTTP to a launched web app.

The app runs on the session's real model with one adapter (random LoRA weights, so its greedy
answers differ from the base's) in its own $GPT_DEMO_HOME; gradio_client talks to it as the page does.
"""

from __future__ import annotations

import re

import pytest

gr = pytest.importorskip("gradio")
pytest.importorskip("peft")

from gradio_client import Client  # noqa: E402

from test_server import make_adapter  # noqa: E402

# temperature, top_p, max_tokens, stop, frequency_penalty, presence_penalty, best_of, seed, inject start, inject restart
GREEDY = [0.0, 1.0, 12, "", 0.0, 0.0, 1, "", "", ""]
ADAPTER = "pirate"


@pytest.fixture(scope="module")
def web(engine, tmp_path_factory, session_home):
    from gpt_demo.config import Settings
    from gpt_demo.feedback import FeedbackStore
    from gpt_demo.web.app import build_app, launch
    from gpt_demo.web.serve_config import ServeConfig

    home = tmp_path_factory.mktemp("web-models")
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    make_adapter(engine, home, ADAPTER)
    settings = Settings.from_env({"GPT_DEMO_HOME": str(home)}, device="cpu", offline=True)
    store = FeedbackStore.open(settings)
    app = build_app(engine, store=store, settings=settings, serve=ServeConfig(concurrency=4))
    url = launch(app, ServeConfig(port=0, concurrency=4), block=False, quiet=True)
    yield {"url": url, "store": store, "settings": settings, "home": home, "pool": app.gpt_demo_engines}
    app.close()


def _reply(client) -> str:
    client.predict("What is the capital of France?", "off", *GREEDY, api_name="/chat_add")
    return list(client.submit("off", *GREEDY, api_name="/chat_reply"))[-1][0][-1]["content"][0]["text"]


def test_the_chat_picker_switches_to_an_adapter_and_names_unknown_models(web, engine):
    label = f"{engine.model_name}:{ADAPTER}"
    tuned = web["pool"].with_adapter(ADAPTER)
    expected = tuned.chat("What is the capital of France?", temperature=0, max_tokens=12).text
    assert expected != engine.chat("What is the capital of France?", temperature=0, max_tokens=12).text
    client = Client(web["url"], verbose=False)
    note = client.predict(label, api_name="/chat_model")
    assert note == f"Model: **{label}**."
    assert _reply(client) == expected
    other = Client(web["url"], verbose=False)  # another visitor still chats with the base
    assert _reply(other).startswith(engine.chat("What is the capital of France?", temperature=0, max_tokens=12).text)
    with pytest.raises(Exception, match=rf"model='nope' is not one of the models here; choose one of "
                                        rf"{engine.model_name}, {label}"):
        client.predict("nope", api_name="/chat_model")


def test_an_adapter_written_after_the_app_started_is_offered_at_once(web, engine):
    from gpt_demo.web.pickers import labels

    make_adapter(engine, web["home"], "fresh")
    assert f"{engine.model_name}:fresh" in labels(web["pool"], engine)  # what the picker shows on focus
    client = Client(web["url"], verbose=False)
    client.predict(f"{engine.model_name}:fresh", api_name="/chat_model")
    assert _reply(client)  # it loaded and answered


def test_an_anonymous_battle_names_no_model_until_the_vote(web, engine):
    from gpt_demo.web.pickers import labels

    client = Client(web["url"], verbose=False)
    offered = set(labels(web["pool"], engine))
    assert len(offered) >= 2
    before = len(web["store"].battles())
    note = client.predict("anonymous", engine.model_name, engine.model_name, api_name="/arena_setup")
    shown = [note]
    answer_a, answer_b, status = client.predict("Write a haiku about the sea.", *GREEDY, api_name="/arena_generate")
    shown += [answer_a, answer_b, status]
    assert answer_a and answer_b and "names show after your vote" in status
    for text in shown:  # every response before the vote
        for name in offered | {ADAPTER, "fresh"}:
            assert name not in text, (name, text)
    status, _ = client.predict(api_name="/arena_a")
    revealed = re.search(r"A was \*\*(.+?)\*\*, B was \*\*(.+?)\*\*", status)
    assert revealed and {revealed[1], revealed[2]} <= offered and revealed[1] != revealed[2]
    battles = web["store"].battles()
    assert len(battles) == before + 1
    last = battles[-1]
    assert (last.model_a, last.model_b, last.verdict, last.anonymous) == (revealed[1], revealed[2], "a", True)
    assert (last.answer_a, last.answer_b) == (answer_a, answer_b)


def test_a_named_battle_then_the_leaderboard_ranks_both_models(web, engine):
    label = f"{engine.model_name}:{ADAPTER}"
    client = Client(web["url"], verbose=False)
    with pytest.raises(Exception, match=r"model_b='smollm2-135m-instruct' is not allowed: it is model_a too"):
        client.predict("named", engine.model_name, engine.model_name, api_name="/arena_setup")
    note = client.predict("named", engine.model_name, label, api_name="/arena_setup")
    assert note == f"A is **{engine.model_name}**, B is **{label}**."
    for verdict in ("b", "tie"):
        a, b, status = client.predict("Give me three tips for a job interview.", *GREEDY, api_name="/arena_generate")
        assert a == engine.chat("Give me three tips for a job interview.", temperature=0, max_tokens=12).text
        assert f"(A: {engine.model_name}, B: {label})" in status
        client.predict(api_name=f"/arena_{verdict}")
    named = [x for x in web["store"].battles() if not x.anonymous]
    assert [(x.model_a, x.model_b, x.verdict) for x in named[-2:]] == [(engine.model_name, label, "b"),
                                                                        (engine.model_name, label, "tie")]
    table, plot = client.predict(api_name="/leaderboard")
    assert engine.model_name in table and label in table and "Elo" in table
    assert plot is not None


@pytest.mark.slow
def test_chat_rank_reward_ppo_then_chat_with_the_new_adapter_all_in_one_app(web, engine, tmp_path):
    """The seeds' loop closed in one app, through its own endpoints: rank answers, train a reward model
    on the store, optimise the policy against it with PPO, and chat with the result. (It replaces the
    Train tab's reward-over-HTTP test, which was its first half.)"""
    from gradio_client import handle_file

    client = Client(web["url"], verbose=False)
    sampled = [0.9, 0.95, 16, "", 0.0, 0.0, 1, "3", "", ""]
    for prompt in ("Explain photosynthesis to a ten-year-old.", "How do I apologise to a friend I upset?"):
        out = client.predict(prompt, 3, *sampled, api_name="/rank_generate")
        answers = [box["value"] for box in out[:3]]
        status, _ = client.predict(prompt, 3, *answers, "", "", "", "1", "2", "3", None, None, None,
                                   api_name="/rank_submit")
        assert status.startswith("Stored ranking")
    status, _, table = client.submit("reward", "rankings store", None, "loop-rm", 2, 5e-4, 0.1, None,
                                     api_name="/train").result(timeout=900)  # the job's last update
    assert status.startswith("Saved **reward** adapter **loop-rm**"), status
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say something kind."}\n{"prompt": "Describe the sea."}\n')
    status, _, table = client.submit("ppo", "upload", handle_file(str(prompts)), "loop-ppo", 1, 1e-4, 0.1,
                                     "loop-rm", api_name="/train").result(timeout=900)
    assert status.startswith("Saved **ppo** adapter **loop-ppo**"), status
    label = f"{engine.model_name}:loop-ppo"
    from gpt_demo.web.pickers import labels

    offered = labels(web["pool"], engine)
    assert label in offered and f"{engine.model_name}:loop-rm" not in offered  # a reward model does not chat
    client.predict(label, api_name="/chat_model")  # offered without a restart
    expected = web["pool"].with_adapter("loop-ppo").chat("What is the capital of France?", temperature=0,
                                                         max_tokens=12).text
    assert _reply(client) == expected
