"""Bounded work per request: the core limits (GPT_DEMO_MAX_*), applied before any model work, in every front-end.

    .venv/bin/python -m pytest tests/test_limits.py -q
"""

from __future__ import annotations

import copy
import threading
import time
from types import SimpleNamespace

import pytest

from gpt_demo import embeddings
from gpt_demo.config import Settings
from gpt_demo.limits import Limits, current_limits

HUGE = "x" * 200_000
TOO_LONG = r"text has 200,000 characters; the limit is 32,000 \(GPT_DEMO_MAX_INPUT_CHARS\)"


@pytest.fixture
def tight(engine):
    """The session's engine (same weights) with its own small limits."""
    def make(**kwargs):
        other = copy.copy(engine)
        other.limits = Limits(**kwargs)
        return other
    return make


# -- the settings ----------------------------------------------------------------------
def test_limits_come_from_the_environment_with_defaults():
    assert Limits.from_env({}) == Limits()
    lim = Settings.from_env({"GPT_DEMO_MAX_INPUT_CHARS": "100", "GPT_DEMO_MAX_TEXTS": " 3 ",
                             "GPT_DEMO_INSPECT_TOKENS": "refuse"}).limits
    assert (lim.max_input_chars, lim.max_texts, lim.inspect_tokens) == (100, 3, "refuse")
    assert lim.max_messages == Limits().max_messages  # the rest keep their defaults


@pytest.mark.parametrize("env, message", [
    ({"GPT_DEMO_MAX_INPUT_CHARS": "lots"},
     r"^GPT_DEMO_MAX_INPUT_CHARS='lots' is not allowed; give a whole number from 1 to 10000000$"),
    ({"GPT_DEMO_MAX_TEXTS": "0"}, r"^GPT_DEMO_MAX_TEXTS='0' is out of range; allowed: 1 <= GPT_DEMO_MAX_TEXTS <= 100000$"),
    ({"GPT_DEMO_CONCURRENCY": "2.5"}, r"^GPT_DEMO_CONCURRENCY='2.5' is not allowed; give a whole number from 1 to 64$"),
    ({"GPT_DEMO_INSPECT_TOKENS": "maybe"}, r"^GPT_DEMO_INSPECT_TOKENS='maybe' is not allowed; choose one of clip, refuse$"),
])
def test_a_bad_environment_value_is_named_with_its_value(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_current_limits_reads_the_environment_now(monkeypatch):
    monkeypatch.setenv("GPT_DEMO_MAX_TEXTS", "7")
    assert current_limits().max_texts == 7
    monkeypatch.setenv("GPT_DEMO_MAX_TEXTS", "x")
    with pytest.raises(ValueError, match="GPT_DEMO_MAX_TEXTS='x' is not allowed"):
        current_limits()


def test_an_engine_carries_the_limits_of_its_settings(engine, settings):
    assert engine.limits == settings.limits == Limits()


# -- embeddings and moderation ---------------------------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    """Any use of MiniLM fails the test: a refused call must be refused before it."""
    def boom():
        raise AssertionError("MiniLM was used by a call that should have been refused first")
    monkeypatch.setattr(embeddings, "minilm_model", boom)


def test_embed_refuses_too_many_texts_and_too_long_ones_before_the_model(no_model, tight):
    with pytest.raises(ValueError, match=r"^texts has 3 texts; the limit is 2 \(GPT_DEMO_MAX_TEXTS\)$"):
        embeddings.embed(["a", "b", "c"], limits=Limits(max_texts=2))
    with pytest.raises(ValueError, match=r"^texts\[1\] has 11 characters; the limit is 10 \(GPT_DEMO_MAX_INPUT_CHARS\)$"):
        embeddings.embed(["short", "x" * 11], limits=Limits(max_input_chars=10))
    with pytest.raises(ValueError, match=r"^texts has 12 characters in all; the limit is 10 \(GPT_DEMO_MAX_TOTAL_CHARS\)$"):
        embeddings.embed(["x" * 6, "y" * 6], limits=Limits(max_total_chars=10))
    # The engine's own limits apply to its calls, for either embedder.
    for model in ("minilm", "chat"):
        with pytest.raises(ValueError, match=r"^texts has 3 texts; the limit is 2"):
            tight(max_texts=2).embed(["a", "b", "c"], model=model)


def test_search_and_analogy_bound_their_corpus_and_words(no_model):
    lim = Limits(max_texts=2, max_input_chars=10)
    with pytest.raises(ValueError, match=r"^corpus has 3 texts; the limit is 2 \(GPT_DEMO_MAX_TEXTS\)$"):
        embeddings.search("q", ["a", "b", "c"], limits=lim)
    with pytest.raises(ValueError, match=r"^query has 11 characters; the limit is 10"):
        embeddings.search("x" * 11, ["a"], limits=lim)
    with pytest.raises(ValueError, match=r"^vocabulary has 3 texts; the limit is 2"):
        embeddings.analogy("a", "b", "c", vocabulary=["d", "e", "f"], limits=Limits(max_texts=2))
    with pytest.raises(ValueError, match=r"^b has 11 characters; the limit is 10"):
        embeddings.analogy("a", "x" * 11, "c", limits=lim)


def test_search_of_a_corpus_at_the_limit_is_not_refused_for_the_query():
    hits = embeddings.search("a cat", ["a kitten", "stocks fell"], top_k=1, limits=Limits(max_texts=2))
    assert hits[0].index == 0
    # The built-in vocabulary (~400 words) is ours, not the caller's: it is not counted.
    assert embeddings.analogy("man", "king", "woman", top_k=1, limits=Limits(max_texts=3))[0].text == "queen"


def test_moderation_refuses_too_long_text_and_too_many_texts_before_the_model(no_model, monkeypatch):
    from gpt_demo.moderation import gate, moderate

    with pytest.raises(ValueError, match=r"^text has 11 characters; the limit is 10 \(GPT_DEMO_MAX_INPUT_CHARS\)$"):
        moderate("x" * 11, limits=Limits(max_input_chars=10))
    with pytest.raises(ValueError, match=r"^texts has 3 texts; the limit is 2 \(GPT_DEMO_MAX_TEXTS\)$"):
        moderate(["a", "b", "c"], limits=Limits(max_texts=2))
    # Without explicit limits, the environment's apply (the web tab, the CLI and the chat gate call it so).
    monkeypatch.setenv("GPT_DEMO_MAX_INPUT_CHARS", "10")
    with pytest.raises(ValueError, match=r"^text has 11 characters; the limit is 10"):
        gate("x" * 11, "block")
    with pytest.raises(ValueError, match=r"^texts\[0\] has 11 characters; the limit is 10"):
        moderate(["x" * 11])


# -- look inside -----------------------------------------------------------------------
def small_window(engine, window: int):
    """The engine's real model and tokenizer, seen through a context window of ``window`` tokens."""
    return SimpleNamespace(model=engine.loaded.model, tokenizer=engine.tokenizer, context_window=window)


LONG = "The quick brown fox jumps over the lazy dog. " * 8  # ~80 tokens


def test_look_inside_clips_to_the_window_keeping_the_end(engine):
    from gpt_demo.generation.distribution import next_token_logits
    from gpt_demo.inspect.next_token import distribution, step

    loaded = small_window(engine, 32)
    ids = engine.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(ids) > 32
    rows = distribution(loaded, LONG, top_k=5, temperature=1.0, limits=Limits())
    assert rows.clipped_tokens == len(ids) - 32
    expected = next_token_logits(loaded, ids[-32:]).topk(5).indices.tolist()  # the end of the text, 32 tokens
    assert [r.token_id for r in rows] == expected
    result = step(loaded, LONG, temperature=0, limits=Limits())
    assert result.token_id == expected[0]
    assert result.clipped_tokens == len(engine.tokenizer(result.text, add_special_tokens=False)["input_ids"]) - 32


def test_look_inside_refuses_with_the_refuse_policy(engine):
    from gpt_demo.inspect.next_token import distribution, step

    loaded = small_window(engine, 32)
    n = len(engine.tokenizer(LONG, add_special_tokens=False)["input_ids"])
    refuse = Limits(inspect_tokens="refuse")
    message = (rf"^text has {n} tokens; the limit is the 32-token context window "
               r"\(GPT_DEMO_INSPECT_TOKENS=clip keeps its end instead\)$")
    with pytest.raises(ValueError, match=message):
        distribution(loaded, LONG, limits=refuse)
    with pytest.raises(ValueError, match=message):
        step(loaded, LONG, limits=refuse)
    distribution(loaded, LONG, limits=Limits())  # cached now under clip ...
    with pytest.raises(ValueError, match=message):  # ... and still refused under refuse
        distribution(loaded, LONG, limits=refuse)


def test_the_next_token_pass_keeps_only_the_last_positions_logits(engine):
    """All positions' logits would be (T, vocab) floats: about 1.6 GB at 8k tokens."""
    from gpt_demo.generation.distribution import next_token_logits

    shapes = []
    head = engine.loaded.model.get_output_embeddings()
    hook = head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    try:
        ids = engine.tokenizer(LONG, add_special_tokens=False)["input_ids"]
        logits = next_token_logits(engine.loaded, ids)
    finally:
        hook.remove()
    assert shapes == [(1, 1, logits.shape[-1])]


@pytest.mark.parametrize("call", [
    lambda e: e.next_tokens(HUGE),
    lambda e: e.step(HUGE, temperature=0),
    lambda e: e.attention(HUGE),
    lambda e: e.strongest_heads(HUGE, "it", "animal"),
    lambda e: e.complete(HUGE, max_tokens=1),
    lambda e: e.chat(HUGE, max_tokens=1),
], ids=["next_tokens", "step", "attention", "strongest_heads", "complete", "chat"])
def test_a_huge_text_is_refused_without_waiting_for_the_model(engine, call):
    """The model's guard is held exclusively (an attention switch in progress): a refusal must not wait for it."""
    from gpt_demo.models.guard import forward_guard

    outcome = {}

    def attempt():
        try:
            call(engine)
        except ValueError as exc:
            outcome["error"] = str(exc)

    with forward_guard(engine.loaded.model).exclusive():
        worker = threading.Thread(target=attempt, daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(10)
        took = time.monotonic() - started
        assert not worker.is_alive(), "the refused request waited for the model's guard"
    assert "200,000 characters; the limit is 32,000 (GPT_DEMO_MAX_INPUT_CHARS)" in outcome["error"]
    assert took < 1.0


def test_chat_messages_are_bounded(tight):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] * 3
    with pytest.raises(ValueError, match=r"^messages has 6 messages; the limit is 5 \(GPT_DEMO_MAX_MESSAGES\)$"):
        tight(max_messages=5).chat(messages, max_tokens=1)


# -- the web app -----------------------------------------------------------------------
def test_the_web_chat_refuses_an_over_long_message_and_a_full_conversation():
    gr = pytest.importorskip("gradio")
    from gpt_demo.web import chat
    from gpt_demo.web.session import WebSession

    values = [0.0, 1.0, 16, "", 0.0, 0.0, 1, "", "", ""]
    session = WebSession()
    with pytest.raises(gr.Error, match=r"message has 11 characters; the limit is 10 \(GPT_DEMO_MAX_INPUT_CHARS\)"):
        chat.add_user(session, "x" * 11, "off", *values, limits=Limits(max_input_chars=10))
    chat.add_user(session, "one", "off", *values, limits=Limits(max_messages=2))
    session.conversation.add("assistant", "two")
    with pytest.raises(gr.Error, match=r"messages has 3 messages; the limit is 2 \(GPT_DEMO_MAX_MESSAGES\)\. "
                                       r"Press Clear \(or Undo\) to make room\."):
        chat.add_user(session, "three", "off", *values, limits=Limits(max_messages=2))
    assert [t["content"] for t in session.conversation.turns] == ["one", "two"]  # left as it was


def test_the_explain_tab_says_when_it_clipped_and_refuses_by_name(engine):
    gr = pytest.importorskip("gradio")
    from gpt_demo.web import explain

    small = copy.copy(engine)
    small.loaded = small_window(engine, 32)
    n = len(engine.tokenizer(LONG, add_special_tokens=False)["input_ids"])
    *_, status = explain.show_distribution(small, None, LONG, 1.0, 5)
    assert (f"longer than the 32-token context window: its first {n - 32} tokens were left out "
            "(GPT_DEMO_INSPECT_TOKENS=refuse refuses such text instead)") in status
    small.limits = Limits(inspect_tokens="refuse")
    with pytest.raises(gr.Error, match=rf"text has {n} tokens; the limit is the 32-token context window"):
        explain.show_distribution(small, None, LONG, 1.0, 5)


GENERATE_EVENTS = {"chat_reply", "rank_generate", "arena_generate"}
MODEL_EVENTS = {"explain_step", "attention_heads", "embed_plot", "embed_search", "embed_analogy", "compare", "train"}


def test_generations_share_the_batch_and_other_model_jobs_their_own_smaller_budget(engine, tmp_path):
    pytest.importorskip("gradio")
    from gpt_demo.feedback import FeedbackStore
    from gpt_demo.web.app import build_app
    from gpt_demo.web.serve_config import ServeConfig

    app = build_app(engine, store=FeedbackStore(tmp_path / "f.sqlite"), serve=ServeConfig(concurrency=6, jobs=3))
    fns = list(app.fns.values())
    named = {fn.api_name: fn for fn in fns if fn.api_visibility == "public"}
    expected = MODEL_EVENTS if "train" in named else MODEL_EVENTS - {"compare", "train"}
    assert expected | GENERATE_EVENTS <= set(named)
    assert {name: (named[name].concurrency_id, named[name].concurrency_limit) for name in GENERATE_EVENTS} == {
        name: ("generate", 6) for name in GENERATE_EVENTS}
    assert {name: (named[name].concurrency_id, named[name].concurrency_limit) for name in expected} == {
        name: ("model", 3) for name in expected}
    # The hidden triggers join them too: Enter in the chat and Retry (generate); the next-token slider
    # and boxes (3), the attention controls (4), Enter in the search box, and the page loads of
    # Explain and Embeddings (3) (model).
    hidden = [fn for fn in fns if fn.api_visibility == "private"]
    assert {fn.concurrency_limit for fn in hidden if fn.concurrency_id == "generate"} == {6}
    assert len([fn for fn in hidden if fn.concurrency_id == "generate"]) >= 2
    assert len([fn for fn in hidden if fn.concurrency_id == "model"]) >= 11
    assert {fn.concurrency_limit for fn in hidden if fn.concurrency_id == "model"} == {3}
    serve = ServeConfig.from_settings(Settings.from_env({"GPT_DEMO_CONCURRENCY": "5", "GPT_DEMO_JOBS": "4"}))
    assert (serve.concurrency, serve.jobs) == (5, 4)
    with pytest.raises(ValueError, match=r"^jobs=0 is out of range; allowed: 1 <= jobs <= 64$"):
        ServeConfig(jobs=0)


def test_serve_passes_decode_concurrency_and_jobs_down_in_settings_not_the_environment(engine, monkeypatch):
    """``gpt-demo serve --decode float --concurrency 3 --jobs 1``: the engine, and every engine the
    web app loads later (its cache), get them, and the process environment is left as it was."""
    import os

    from gpt_demo.engine_cache import EngineCache

    seen = {}

    def fake_load_engine(**kwargs):
        seen["settings"] = kwargs["settings"]
        raise KeyboardInterrupt  # stop before the model loads: what serve passes down is the point

    monkeypatch.setattr("gpt_demo.api.load_engine", fake_load_engine)
    monkeypatch.delenv("GPT_DEMO_DECODE", raising=False)
    monkeypatch.delenv("GPT_DEMO_CONCURRENCY", raising=False)
    from gpt_demo.cli import main

    assert main(["serve", "--decode", "float", "--concurrency", "3", "--jobs", "1", "--port", "0"]) == 130
    settings = seen["settings"]
    assert (settings.decode, settings.limits.concurrency, settings.limits.jobs) == ("float", 3, 1)
    assert "GPT_DEMO_DECODE" not in os.environ and "GPT_DEMO_CONCURRENCY" not in os.environ
    # an engine carries the settings it was loaded with, and a cache over it loads the others with them
    loaded = copy.copy(engine)
    loaded.settings = settings
    assert EngineCache(base=loaded).settings() is settings


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    pytest.importorskip("gradio")
    from gpt_demo.feedback import FeedbackStore
    from gpt_demo.web.app import build_app, launch
    from gpt_demo.web.serve_config import ServeConfig

    store = FeedbackStore(tmp_path_factory.mktemp("limits") / "feedback.sqlite")
    app = build_app(engine, store=store, serve=ServeConfig(concurrency=2))
    url = launch(app, ServeConfig(port=0, concurrency=2), block=False, quiet=True)
    yield url
    app.close()


def test_over_http_a_huge_explain_request_is_refused_at_once_while_a_chat_answers(engine, server):
    """A chat is held inside a forward pass (it holds the model's shared guard and one of two
    model slots); a 200,000-character Explain step arrives. It gets a clear error within a
    second, and the chat, released, still answers."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    greedy = [0.0, 1.0, 24, "", 0.0, 0.0, 1, "", "", ""]
    model = engine.loaded.model
    armed, held, release = threading.Event(), threading.Event(), threading.Event()

    def hold_once(module, args):
        if armed.is_set() and not held.is_set():
            held.set()
            assert release.wait(120)

    chat_client, explain_client = Client(server, verbose=False), Client(server, verbose=False)
    chat_client.predict("Name three colours.", "off", *greedy, api_name="/chat_add")
    outcome = {}

    def chat():
        outcome["updates"] = list(chat_client.submit("off", *greedy, api_name="/chat_reply"))

    lean = engine.loaded.lean  # generation runs on the lean path: hold its prompt pass (inside the shared guard)
    lean.forward = lambda *a, _run=lean.forward, **k: (hold_once(None, a), _run(*a, **k))[1]
    hook = model.register_forward_pre_hook(hold_once)
    armed.set()
    talker = threading.Thread(target=chat)
    try:
        talker.start()
        assert held.wait(120), "the chat never reached the model"
        started = time.monotonic()
        with pytest.raises(AppError, match=TOO_LONG):
            explain_client.submit(HUGE, 1.0, 10, None, "", api_name="/explain_step").result(timeout=10)
        took = time.monotonic() - started
        assert talker.is_alive() and not release.is_set()  # the chat was still inside its forward pass
    finally:
        release.set()
        hook.remove()
        del lean.forward
        talker.join(120)
    assert took < 1.0, took
    answer = outcome["updates"][-1][0][-1]["content"][0]["text"]
    assert answer.strip()
    # And a step on an ordinary text still works over the same endpoint.
    new_text, *_ = explain_client.predict("The capital of France is", 0.0, 5, None, "", api_name="/explain_step")
    assert new_text.startswith("The capital of France is") and len(new_text) > len("The capital of France is")
