"""Per-token probabilities of an answer (``inspect.token_probs``) and the web app's Show probabilities.

    .venv/bin/python -m pytest tests/test_token_probs.py -q     # the real default model; ~30 s
"""

from __future__ import annotations

import colorsys
import math
import re

import pytest

from gpt_demo.api import Streamed
from gpt_demo.inspect.token_probs import (answer_tokens, prefix_text, prob_colour, summary, tokens_html,
                                          tokens_text)

QUESTION = [{"role": "user", "content": "Name three colours."}]
SPAN = re.compile(r"<span class='gd-tok' data-i='(\d+)' data-prob='([0-9.]+)' style='background:([^']+)'")


@pytest.fixture(scope="module")
def streamed(engine):
    """One sampled answer, streamed with its log-probabilities (what the Chat tab asks for)."""
    stream = Streamed(engine.stream_chat(QUESTION, temperature=0.7, top_p=0.9, max_tokens=24, seed=5,
                                         logprobs=True, top_logprobs=5))
    text = "".join(stream)
    return text, stream.completion.choices[0]


def test_a_stream_returns_its_completion_with_the_logprobs_of_what_it_streamed(engine, streamed):
    text, choice = streamed
    assert choice.text == text and len(choice.logprobs) == len(choice.token_ids) > 3
    assert engine.tokenizer.decode([t.token_id for t in choice.logprobs], skip_special_tokens=True) == text
    assert all(len(t.top_logprobs) == 5 for t in choice.logprobs)


def test_the_colours_are_the_returned_probabilities(streamed):
    _, choice = streamed
    tokens = answer_tokens(choice.logprobs)
    html = tokens_html(tokens)
    spans = SPAN.findall(html)
    assert len(spans) == len(choice.logprobs)
    for (i, prob, colour), lp in zip(spans, choice.logprobs):
        assert abs(float(prob) - math.exp(lp.logprob)) < 1e-6
        assert colour == prob_colour(math.exp(lp.logprob))
    # Likelier is greener: the hue never falls as the probability rises.
    def hue(colour):
        return colorsys.rgb_to_hls(*(int(colour[k:k + 2], 16) / 255 for k in (1, 3, 5)))[0]

    by_prob = sorted((float(p), hue(c)) for _, p, c in spans)
    assert [h for _, h in by_prob] == sorted(h for _, h in by_prob)
    # Each token carries its alternatives (the hover table); the plain-text table lists the same rows.
    assert html.count("class='gd-alt'") == len(tokens)
    assert tokens_text(tokens).count("\n") == len(tokens)
    s = summary(tokens)
    assert s["tokens"] == len(tokens) and math.isclose(
        s["perplexity"], math.exp(-sum(t.logprob for t in tokens) / len(tokens)))


def test_the_alternatives_at_a_position_are_next_tokens_on_the_prefix(engine, streamed):
    _, choice = streamed
    tokens = answer_tokens(choice.logprobs)
    prompt = engine.prompt_text(QUESTION)
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    for i in (0, len(tokens) // 2, len(tokens) - 2):
        rows = engine.next_tokens(prefix_text(tokens, i, prompt, engine.tokenizer), top_k=10, temperature=1.0)
        table = {r.token: r.prob for r in rows}
        for tok, p in tokens[i].alternatives:
            # The answer was decoded on the int4 lean path, the table on the transformers model: same weights,
            # other kernels, so the numbers agree to about a percent, and the same tokens lead.
            assert tok in table and abs(table[tok] - p) < 0.02, (i, tok, p, table)
        assert rows[0].token == tokens[i].alternatives[0][0] or rows[0].prob - table.get(tokens[i].alternatives[0][0], 0) < 0.02


def test_an_answer_written_without_logprobs_is_read_back_to_the_same_numbers(engine, streamed):
    text, choice = streamed
    scored = engine.score_answer(QUESTION, text, top=5)
    # The stream's logprobs end with the end token, which the text does not hold.
    generated = [t for t in choice.logprobs if t.token_id not in engine.tokenizer.all_special_ids]
    assert [t.token_id for t in scored] == [t.token_id for t in generated]
    # Generation ran on the int4 lean path, the read-back on the transformers model (as next_tokens above), so
    # the probabilities (what the colours show) agree to about a percent. Log-probabilities of unlikely tokens
    # differ more: ' ocean' at p=0.067 was 0.102 nats apart on one host, 0.0065 in probability.
    assert max(abs(math.exp(a.logprob) - math.exp(b.logprob)) for a, b in zip(scored, choice.logprobs)) < 0.02
    assert max(abs(a.logprob - b.logprob) for a, b in zip(scored, choice.logprobs)) < 0.25
    # Reading back uses the model that next_tokens uses, so those two agree closely.
    tokens = answer_tokens(scored)
    prompt = engine.prompt_text(QUESTION)
    rows = engine.next_tokens(prefix_text(tokens, 3, prompt, engine.tokenizer), top_k=5)
    assert [r.token for r in rows] == [t for t, _ in tokens[3].alternatives]
    assert max(abs(r.prob - p) for r, (_, p) in zip(rows, tokens[3].alternatives)) < 1e-3
    with pytest.raises(ValueError, match=r"answer='' is not allowed"):
        engine.score_answer(QUESTION, "")
    with pytest.raises(ValueError, match=r"token=99 is out of range; allowed: 0 <= token < 3"):
        prefix_text(tokens[:3], 99)
    with pytest.raises(ValueError, match=r"no log-probabilities"):
        answer_tokens(None)


def test_web_chat_keeps_its_answers_probabilities_and_a_click_opens_explain_there(engine):
    gr = pytest.importorskip("gradio")
    from gpt_demo.web import chat, probs, rank
    from gpt_demo.web.params_panel import PARAM_FIELDS
    from gpt_demo.web.session import WebSession

    values = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 12, "stop": "", "frequency_penalty": 0.0,
              "presence_penalty": 0.0, "best_of": None, "seed": 2, "inject_start_text": "", "inject_restart_text": ""}
    pv = [values[f] for f in PARAM_FIELDS]
    session = WebSession()
    chat.add_user(session, "Name a fruit.", "off", *pv)
    list(chat.stream_reply(engine, session, "off", *pv))
    answer = session.conversation.turns[-1]["content"]
    held = session.probs["chat"]
    assert held.answer == answer and len(held.tokens) >= 3
    session, hidden = probs.probs_view(engine, session, "chat", False)
    assert hidden["visible"] is False
    session, shown = probs.probs_view(engine, session, "chat", True)
    assert "id='probs-chat'" in shown["value"] and len(SPAN.findall(shown["value"])) == len(held.tokens)
    text, session, table, _, _, status, tabs, inner, picked = probs.explain_token(engine, session, "chat:2:17", 1.0, 5)
    assert text == engine.prompt_text(held.messages) + engine.tokenizer.decode([t.token_id for t in held.tokens[:2]])
    assert session.explain_text == text and "the model weighed these" in status
    assert picked["value"] == engine.model_name  # Explain's picker names the model the table is for
    assert list(table["probability"]) == [round(r.prob, 4) for r in engine.next_tokens(text, top_k=5)]
    for bad in ("chat", "arena:1:2", "chat:²", "chat:1:2:3", "rank-12:0"):
        with pytest.raises(gr.Error, match=r"is not allowed; allowed: chat:N or rank-K:N"):
            probs.explain_token(engine, session, bad, 1.0, 5)
    # Undo takes the answer off the screen, and its numbers with it: a late click is refused by name.
    chat.undo(session)
    assert "chat" not in session.probs
    with pytest.raises(gr.Error, match=r"no longer on show"):
        probs.explain_token(engine, session, "chat:2:18", 1.0, 5)
    # Block mode: a withheld answer is not scored as if the model had written the placeholder.
    session.conversation.add("user", "Hi")
    session.conversation.add("assistant", probs.WITHHELD)
    session, shown = probs.probs_view(engine, session, "chat", True)
    assert "withheld by moderation" in shown["value"] and "gd-tok" not in shown["value"]
    # The same text answering another question gets its own numbers, not the old ones.
    chat.clear(session)
    for question in ("Say yes.", "Answer with one word: yes."):
        session.conversation.add("user", question)
        session.conversation.add("assistant", "Yes.")
        session, shown = probs.probs_view(engine, session, "chat", True)
        assert session.probs["chat"].messages[-1]["content"] == question
        session.conversation.turns.pop()
    # Rank: an answer edited in its box is read back through the model, so its view shows the edit.
    session.rank_prompt = "Say hi."
    edited = "Hello! Lovely to meet you."
    session, *views = rank.rank_probs(engine, session, "Say hi.", edited, "", "", "", "", "",
                                      True, True, False, False, False, False)
    ids = engine.tokenizer(edited, add_special_tokens=False)["input_ids"]
    assert len(SPAN.findall(views[0]["value"])) == len(ids)
    assert "No answer in this box" in views[1]["value"] and views[2]["visible"] is False


def test_model_text_in_the_view_is_escaped_and_nothing_loads():
    from html.parser import HTMLParser

    from gpt_demo.inspect.token_probs import TokenView

    payloads = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "' onmouseover='alert(1)", "\n"]
    tokens = [TokenView(i, p, -1, 0.5, math.log(0.5), [(p, 0.5), ("<b>", 0.2)]) for i, p in enumerate(payloads)]
    seen: list[tuple[str, list]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            seen.append((tag, attrs))

    Tags().feed(tokens_html(tokens, dom_id="probs-x' onclick='alert(1)"))
    assert {tag for tag, _ in seen} <= {"style", "div", "span", "table", "tr", "td"}  # nothing that loads or runs
    names = {name for _, attrs in seen for name, _ in attrs}
    assert names <= {"class", "id", "style", "title", "data-i", "data-prob"}, names  # no on* handler
    spans = [dict(a) for t, a in seen if t == "span" and ("class", "gd-tok") in a]
    assert [s["title"].split(":")[0] for s in spans] == [repr(p) for p in payloads]  # the text, as text
