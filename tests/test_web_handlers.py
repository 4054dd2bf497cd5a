"""The web app's handlers called directly, on the real default model and a real SQLite store.

    .venv/bin/python -m pytest tests/test_web_handlers.py -q
"""

from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from gpt_demo.feedback import FeedbackStore  # noqa: E402
from gpt_demo.web import arena, chat, embed, explain, moderate, rank  # noqa: E402
from gpt_demo.web.params_panel import PARAM_FIELDS, to_params  # noqa: E402
from gpt_demo.web.render import escape_markdown_html  # noqa: E402
from gpt_demo.web.session import WebSession  # noqa: E402


def values(**changes):
    """Panel values in PARAM_FIELDS order: greedy, 24 tokens, unless changed."""
    base = dict(temperature=0.0, top_p=1.0, max_tokens=24, stop="", frequency_penalty=0.0, presence_penalty=0.0,
                best_of=1, seed="", inject_start_text="", inject_restart_text="")
    base.update(changes)
    return [base[name] for name in PARAM_FIELDS]


def converse(engine, session, text, mode="off", **params):
    session, shown, box, note = chat.add_user(session, text, mode, *values(**params))
    updates = list(chat.stream_reply(engine, session, mode, *values(**params)))
    return session, updates


def test_the_panel_turns_into_validated_params():
    p = to_params(*values(temperature=0.7, stop="###\\n\nEND", seed="42", best_of=3.0, max_tokens=12.0))
    assert p.temperature == 0.7 and p.stop == ("###\n", "END") and p.seed == 42 and p.best_of == 3 and p.max_tokens == 12
    assert to_params(*values(best_of=1)).best_of is None
    with pytest.raises(ValueError, match="seed='abc' is not allowed; allowed: a whole number"):
        to_params(*values(seed="abc"))
    for field, bad in (("temperature", None), ("temperature", "hot"), ("seed", "1e999"), ("max_tokens", float("nan"))):
        with pytest.raises(ValueError, match=f"{field}=.* is not allowed; allowed: a "):
            to_params(*values(**{field: bad}))
    with pytest.raises(ValueError, match="top_p=0.0 is out of range"):
        to_params(*values(top_p=0.0))


def test_chat_streams_an_answer_into_the_session(engine):
    session, updates = converse(engine, None, "What is the capital of France?")
    assert len(updates) > 2  # streamed: several updates, each a longer answer
    lengths = [len(u[1][-1]["content"]) for u in updates]
    assert lengths == sorted(lengths) and lengths[-1] > 0
    final = updates[-1][1]
    assert final[0] == {"role": "user", "content": "What is the capital of France?"}
    assert final[1]["role"] == "assistant" and "Paris" in final[1]["content"]
    assert session.conversation.turns[-1]["content"] == final[1]["content"]


def test_each_session_has_its_own_history(engine):
    a, _ = converse(engine, WebSession(), "My name is Ada.", max_tokens=8)
    b = WebSession()
    assert len(a.conversation.turns) == 2 and b.conversation.turns == [] and a.id != b.id


def test_system_prompt_retry_undo_clear(engine):
    session = chat.set_system(WebSession(), "Answer in one word.")
    session, updates = converse(engine, session, "Name a colour.", temperature=1.0, seed="1", max_tokens=8)
    first = session.conversation.turns[-1]["content"]
    session, shown = chat.retry(session)
    assert shown == [{"role": "user", "content": "Name a colour."}]
    again = list(chat.stream_reply(engine, session, "off", *values(temperature=1.0, seed="1", max_tokens=8)))
    assert again[-1][1][-1]["content"] == first  # same seed, same answer
    assert session.conversation.system == "Answer in one word."
    session, shown, restored, note = chat.undo(session)
    assert shown == [] and restored == "Name a colour."
    session, _ = converse(engine, session, "Hi", max_tokens=4)
    session, shown, note = chat.clear(session)
    assert shown == [] and session.conversation.turns == [] and session.conversation.system == "Answer in one word."


def test_raw_html_shows_as_text():
    shown = escape_markdown_html('<img src=x onerror="alert(1)"> **bold** <script>alert(2)</script>')
    assert "<img" not in shown and "<script" not in shown
    assert "&lt;img src=x onerror=" in shown and "**bold**" in shown
    # Code stays literal; the fence grows past 3 backticks so every Markdown parser agrees where it ends.
    assert escape_markdown_html("```html\n<b>code</b>\n```") == "````html\n<b>code</b>\n````"
    # Things that look like code but are not, to a Markdown renderer: they must be escaped too.
    for tricky in ("Hello ``` <img src=https://evil/x.png> <b>hi</b>", "x ~~~<b>bold</b>~~~", "\\`<b>bold</b>`",
                   "`open <b> never closed"):
        assert "<b>" not in escape_markdown_html(tricky) and "<img" not in escape_markdown_html(tricky), tricky
    # A real code span keeps its look; an invisible word joiner after "<" keeps it from being a tag anywhere.
    assert escape_markdown_html("use `<b>` for bold") == "use `<\u2060b>` for bold"
    session = WebSession()
    session, shown, _, _ = chat.add_user(session, "<script>alert(1)</script>", "off", *values())
    assert shown[0]["content"] == "&lt;script>alert(1)&lt;/script>"
    assert session.conversation.turns[0]["content"] == "<script>alert(1)</script>"  # the model sees the real text


def test_bad_input_is_refused_and_changes_nothing():
    session = WebSession()
    with pytest.raises(gr.Error, match="temperature=3.0 is out of range; allowed: 0 <= temperature <= 2"):
        chat.add_user(session, "Hello", "off", *values(temperature=3.0))
    with pytest.raises(gr.Error, match="message='' is not allowed"):
        chat.add_user(session, "   ", "off", *values())
    with pytest.raises(gr.Error, match="moderation='loud' is not allowed"):
        chat.add_user(session, "Hello", "loud", *values())
    assert session.conversation.turns == []


def test_a_long_input_is_cut_to_the_window_with_a_visible_note(engine):
    # max_tokens=4096 leaves a 4096-token prompt budget (the smallest the engine allows), so the
    # prefill stays half the window; the stop at the first space ends the answer at once.
    session, updates = converse(engine, None, "Summarise: " + "the cat sat on the mat. " * 800, max_tokens=4096,
                                stop=" ")
    note = updates[-1][2]
    assert f"did not fit the {engine.context_window}-token context window" in note and "cut" in note
    assert updates[-1][1][-1]["role"] == "assistant"


def test_block_mode_refuses_a_flagged_message_and_warn_mode_notes_it(engine):
    session = WebSession()
    with pytest.raises(gr.Error, match=r"Blocked: your message was flagged by moderation \(.*violence"):
        chat.add_user(session, "I want to kill him", "block", *values())
    assert session.conversation.turns == []
    session, shown, _, note = chat.add_user(session, "I want to kill him", "warn", *values())
    assert note.startswith("Warning: your message was flagged") and len(session.conversation.turns) == 1


def test_rank_generates_k_answers_and_stores_a_valid_ranking(engine, gpt_demo_home):
    store = FeedbackStore.open()
    out = rank.generate_candidates(engine, None, "Write a haiku about the sea.", 3, *values(temperature=1.0, seed="3", max_tokens=16))
    session, boxes, ranks, status = out[0], out[1:7], out[7:13], out[13]
    assert [b["visible"] for b in boxes] == [True, True, True, False, False, False]
    answers = [b["value"] for b in boxes[:3]]
    assert all(answers) and len(set(answers)) > 1  # sampled, not identical
    session, msg, stats = rank.submit_ranking(store, engine, session, "Write a haiku about the sea.", 3,
                                              *answers, "", "", "", "2", "1", "3", None, None, None)
    assert msg.startswith("Stored ranking #1 (3 preference pairs)") and "**1** rankings · **3** preference pairs" in stats
    (stored,) = list(store.rankings())
    assert stored.candidates == answers and stored.ranks == [2, 1, 3] and stored.session_id == session.id
    assert stored.params["temperature"] == 1.0 and stored.params["n"] == 3 and stored.model == engine.model_name


@pytest.mark.parametrize("ranks, message", [
    (["1", "1", "2"], "rank 3 is missing, rank 1 is used twice"),
    (["1", None, "2"], "answer(s) 2 have no rank"),
])
def test_an_invalid_ranking_gets_a_message_and_stores_nothing(engine, gpt_demo_home, ranks, message):
    store = FeedbackStore.open()
    session, msg, stats = rank.submit_ranking(store, engine, WebSession(), "Q?", 3, "a", "b", "c", "", "", "",
                                              *ranks, None, None, None)
    assert msg.startswith("Not stored:") and message in msg
    assert store.counts() == {"rankings": 0, "pairs": 0}


def test_arena_votes(engine, gpt_demo_home):
    store = FeedbackStore.open()
    session, a, b, status = arena.arena_generate(engine, None, "Tell me a fun fact.", *values(temperature=1.0, max_tokens=12))
    assert a and b
    session, msg, stats = arena.vote(store, engine, session, "b")
    assert msg.startswith("Stored vote #1: B is better")
    assert store.pairs() == [{"prompt": "Tell me a fun fact.", "chosen": b, "rejected": a}]
    session, msg, stats = arena.vote(store, engine, session, "a")  # the same answers cannot be voted twice
    assert msg == "Not stored: generate two answers first." and store.counts()["rankings"] == 1
    for mode in ("samples", "anonymous"):  # the page opens with no prompt picked: a message, in every mode
        session.models["arena_mode"] = mode
        with pytest.raises(gr.Error, match=r"prompt"):
            arena.arena_generate(engine, session, None, *values(temperature=1.0, max_tokens=12))


def test_explain_handlers(engine):
    session, table, chart, choice, status = explain.show_distribution(engine, None, "The capital of France is", 0.5, 5)
    assert list(table.columns) == ["rank", "token", "probability", "logprob"] and len(table) == 5
    assert table["token"][0] == "1. ␣Paris" and "␣Paris" in status
    new_text, *_, step_status = explain.take_step(engine, session, "The capital of France is", 0.0, 5, None, "")
    assert new_text == "The capital of France is Paris" and "Appended **␣Paris** (sampled" in step_status
    fig, reading = explain.show_attention(engine, explain.ATTENTION_EXAMPLE, 13, "8", "it")
    assert reading.startswith("**it** attends most to: ␣animal")
    assert fig.axes[0].get_title() == "layer 13, head 8"
    heads = explain.find_heads(engine, explain.ATTENTION_EXAMPLE, "it", "animal")
    assert (heads["layer"][0], heads["head"][0]) == (13, 8)
    with pytest.raises(gr.Error, match="layer=40 is out of range"):
        explain.show_attention(engine, explain.ATTENTION_EXAMPLE, 40, "mean", "")


def test_embedding_handlers(engine):
    df, status = embed.plot_points(engine, embed.EXAMPLE_TEXTS, "minilm", "pca")
    assert list(df.columns) == ["x", "y", "text"] and len(df) == 12 and "12 texts" in status
    hits = embed.search_texts(engine, embed.EXAMPLE_TEXTS, "an animal on a carpet", 2, "minilm")
    assert set(hits["text"]) <= {"A cat sat on the mat.", "A kitten rested on the rug."} and len(hits) == 2
    answers = embed.run_analogy(engine, "man", "king", "woman", "", "minilm")
    assert answers["answer"][0] == "queen"
    with pytest.raises(gr.Error, match="texts='' is not allowed"):
        embed.plot_points(engine, "  \n ", "minilm", "pca")


def test_moderation_handler_scores_and_flags():
    from gpt_demo.moderation import CATEGORIES

    shipped = moderate.shipped_thresholds()
    scores, badge, raw, table = moderate.check_text("I want to kill him", *[shipped[c] for c in CATEGORIES])
    assert set(scores) == set(CATEGORIES) and raw["categories"]["violence"] is True
    assert "FLAGGED" in badge and "violence" in badge and table["flagged"][CATEGORIES.index("violence")] == "yes"
    scores, badge, raw, _ = moderate.check_text("What a lovely morning for a walk.", *[shipped[c] for c in CATEGORIES])
    assert raw["flagged"] is False and "Not flagged" in badge
    # Thresholds are live: at 1.0 nothing can be flagged.
    _, badge, raw, _ = moderate.check_text("I want to kill him", *[1.0] * len(CATEGORIES))
    assert raw["flagged"] is False


def test_serve_settings_come_from_the_environment_and_flags_win():
    from gpt_demo.config import Settings
    from gpt_demo.web.serve_config import ServeConfig

    space = Settings.from_env({"GRADIO_SERVER_NAME": "0.0.0.0", "GPT_DEMO_PORT": "8000"})
    cfg = ServeConfig.from_settings(space)
    assert (cfg.host, cfg.port, cfg.exposed) == ("0.0.0.0", 8000, True)
    assert "no password" in cfg.warning() and "--auth" in cfg.warning()
    assert ServeConfig.from_settings(space, auth="a:b").warning() is None
    assert ServeConfig.from_settings(space, host="127.0.0.1").exposed is False
    assert ServeConfig.from_settings(Settings.from_env({})).host == "127.0.0.1"  # local unless told otherwise
    with pytest.raises(ValueError, match="GPT_DEMO_PORT='http' is not allowed"):
        Settings.from_env({"GPT_DEMO_PORT": "http"})
    with pytest.raises(ValueError, match="auth='bob' is not allowed; give user:password"):
        ServeConfig(auth="bob")
    with pytest.raises(ValueError, match="concurrency=0 is out of range"):
        ServeConfig(concurrency=0)


def test_a_newer_reply_stops_an_older_stream_from_writing(engine):
    session, _, _, _ = chat.add_user(WebSession(), "Count to twenty.", "off", *values(max_tokens=48))
    first = chat.stream_reply(engine, session, "off", *values(max_tokens=48))
    next(first), next(first)  # the first answer is being written...
    session, _ = chat.retry(session)  # ...when the user presses Retry
    second = list(chat.stream_reply(engine, session, "off", *values(max_tokens=48)))
    assert list(first) == []  # the old stream ends at its next step and writes nothing more
    assert [t["role"] for t in session.conversation.turns] == ["user", "assistant"]
    assert session.conversation.turns[-1]["content"] == second[-1][1][-1]["content"]


def test_rank_records_edits_and_refuses_a_double_submit_and_a_double_vote(engine, gpt_demo_home):
    store = FeedbackStore.open()
    out = rank.generate_candidates(engine, None, "Name a fruit.", 2, *values(temperature=1.0, seed="4", max_tokens=8))
    session, answers = out[0], [out[1]["value"], out[2]["value"]]
    arena.arena_generate(engine, session, "Name a colour.", *values(temperature=1.0, max_tokens=8))
    ranks = ["1", "2", None, None, None, None]
    session, msg, _ = rank.submit_ranking(store, engine, session, "Name a fruit.", 2, *answers, "", "", "", "", *ranks)
    assert msg.startswith("Stored ranking #1")
    session, msg, _ = rank.submit_ranking(store, engine, session, "Name a fruit.", 2, *answers, "", "", "", "", *ranks)
    assert msg == "Not stored again: this ranking is already stored as #1."
    edited = [answers[0] + " (edited)", answers[1]]
    session, msg, _ = rank.submit_ranking(store, engine, session, "Name a fruit.", 2, *edited, "", "", "", "", *ranks)
    first, second = list(store.rankings())
    assert first.params["n"] == 2 and first.params["seed"] == 4  # the Rank tab's own parameters, not the arena's
    assert second.params == {"answers": "typed or edited by the user"}
    session, msg, _ = arena.vote(store, engine, session, "a")
    session, again, _ = arena.vote(store, engine, session, "a")
    assert msg.startswith("Stored vote #3") and again.startswith("Not stored")
    assert list(store.rankings())[-1].params["n"] == 2 and store.counts()["rankings"] == 3


def test_an_empty_answer_is_a_placeholder_never_stored_as_if_the_model_wrote_it(engine, tmp_path):
    store = FeedbackStore(tmp_path / "empty.sqlite")
    prompt = "Write a haiku about the sea."
    # Greedy decoding is repeatable: stop on the answer's own first character and the answer is empty.
    first = engine.chat(prompt, temperature=0.0, max_tokens=4).text.strip()[0]
    panel = values(temperature=0.0, max_tokens=8, stop=first)
    session, *rest = rank.generate_candidates(engine, WebSession(), prompt, 2, *panel)
    boxes, status = rest[:6], rest[-1]
    assert [b["value"] for b in boxes[:2]] == ["", ""] and session.rank_answers == ("", "")
    assert "Answer 1, 2 came back empty" in status
    session, status, _ = rank.submit_ranking(store, engine, session, prompt, 2, "", "", "", "", "", "",
                                             "1", "2", None, None, None, None)
    assert status == "Not stored: candidates[0]='' is not allowed; every answer needs some text"
    session, a, b, status = arena.arena_generate(engine, session, prompt, *panel)
    assert (a, b) == ("", "") and status.startswith("A and B came back empty")
    session, status, _ = arena.vote(store, engine, session, "a")
    assert status.startswith("Not stored: generate two answers first")
    assert store.counts()["rankings"] == 0
    assert rank.EMPTY_ANSWER not in [b["value"] for b in boxes]  # only the boxes' placeholder says so
