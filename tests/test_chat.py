"""Conversation: messages, the chat template and truncation to the context window.

    .venv/bin/python -m pytest tests/test_chat.py -q
    .venv/bin/python -m pytest tests/test_chat.py -q -m "not slow"    # skip the ~8k-token prefill
"""

from __future__ import annotations

import math

import pytest

from gpt_demo.chat import Conversation

HUGE = "Summarise: " + "the cat sat on the mat. " * 3400 + "What sat on the mat?"  # ~20,000 words


def test_from_messages_messages_undo_and_clear():
    conv = Conversation.from_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}]
    )
    assert conv.system == "Be brief." and len(conv.turns) == 2
    assert conv.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert conv.undo() == {"role": "assistant", "content": "Hello!"}
    assert conv.messages[-1] == {"role": "user", "content": "Hi"}
    conv.clear()
    assert conv.turns == [] and conv.undo() is None
    assert conv.messages == [{"role": "system", "content": "Be brief."}]  # clear keeps the system prompt


def test_messages_is_a_copy():
    conv = Conversation().add("user", "Hi")
    conv.messages[0]["content"] = "changed"
    assert conv.turns[0]["content"] == "Hi"


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"role": "robot", "content": "x"}, "role='robot'"),
        ({"content": "no role"}, "messages[0]="),
        ("just text", "messages[0]='just text'"),
        ({"role": "user", "content": 42}, "content=42"),
    ],
)
def test_bad_messages_are_named(bad, named):
    with pytest.raises(ValueError) as err:
        Conversation.from_messages([bad])
    assert named in str(err.value)


def test_a_system_message_after_the_first_is_refused_by_name():
    with pytest.raises(ValueError, match=r"role='system' is not allowed"):
        Conversation.from_messages([{"role": "user", "content": "Hi"}, {"role": "system", "content": "late"}])
    with pytest.raises(ValueError, match=r"role='tool'"):
        Conversation().add("tool", "x")


def test_the_chat_template_is_used(engine):
    conv = Conversation(system="Be brief.").add("user", "Hi")
    text = engine.tokenizer.decode(conv.render(engine.tokenizer))
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text
    assert "<|im_start|>user\nHi<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")


def long_conversation(turn_pairs: int = 12) -> Conversation:
    conv = Conversation(system="SYSTEM-PROMPT stays.")
    for i in range(turn_pairs):
        conv.add("user", f"question-{i} " + "blah " * 20)
        conv.add("assistant", f"answer-{i} " + "blah " * 20)
    return conv.add("user", "NEWEST question?")


def test_truncation_drops_the_oldest_turns_but_keeps_system_and_newest(engine):
    tok = engine.tokenizer
    conv = long_conversation()
    rendered = conv.prompt_ids(tok, budget=200)
    text = tok.decode(rendered.ids)
    assert len(rendered.ids) <= 200
    assert "SYSTEM-PROMPT stays." in text and "NEWEST question?" in text
    # The survivors are the newest turns, and dropped_messages counts exactly the ones that went.
    markers = [t["content"].split()[0] + " " for t in conv.turns[:-1]]  # "question-3 ", "answer-3 ", ...
    present = [i for i, marker in enumerate(markers) if marker in text]
    assert rendered.dropped_messages > 0 and present  # something went, something old-but-recent stayed
    assert present == list(range(rendered.dropped_messages, len(conv.turns) - 1))
    assert "question-0 " not in text
    assert rendered.truncated and rendered.clipped_tokens == 0
    assert f"dropped the {rendered.dropped_messages} oldest message(s)" in rendered.note
    # The conversation itself is untouched, and with room to spare nothing is dropped.
    assert len(conv.turns) == 25
    roomy = conv.prompt_ids(tok, budget=100_000)
    assert roomy.dropped_messages == 0 and roomy.note == "" and not roomy.truncated


def test_truncation_drops_as_few_turns_as_possible(engine):
    tok = engine.tokenizer
    conv = long_conversation()
    rendered = conv.prompt_ids(tok, budget=200)
    # One turn fewer dropped would not have fitted.
    one_more = conv.render(tok, conv.turns[rendered.dropped_messages - 1 :])
    assert len(one_more) > 200


def test_a_single_message_longer_than_the_budget_keeps_its_end(engine):
    conv = Conversation(system="SYSTEM-PROMPT stays.").add("user", "BEGINNING " + "filler " * 500 + "THE END")
    rendered = conv.prompt_ids(engine.tokenizer, budget=120)
    text = engine.tokenizer.decode(rendered.ids)
    assert len(rendered.ids) <= 120 and rendered.clipped_tokens > 0
    assert "THE END" in text and "BEGINNING" not in text and "SYSTEM-PROMPT stays." in text
    assert "cut" in rendered.note and str(rendered.clipped_tokens) in rendered.note
    assert text.rstrip().endswith("<|im_start|>assistant")  # still ready for the answer


def test_a_twenty_thousand_word_message_fits_a_small_budget(engine):
    rendered = Conversation().add("user", HUGE).prompt_ids(engine.tokenizer, budget=200)
    text = engine.tokenizer.decode(rendered.ids)
    assert len(rendered.ids) <= 200 and rendered.clipped_tokens > 19_000
    assert "What sat on the mat?" in text and "Summarise" not in text


def roomy(engine):
    """The session's engine allowing 100,000-character messages (the default limit is 32,000)."""
    import copy

    from gpt_demo.limits import Limits

    other = copy.copy(engine)
    other.limits = Limits(max_input_chars=100_000)
    return other


def test_a_huge_message_is_refused_by_the_default_character_limit(engine):
    with pytest.raises(ValueError, match=r"^messages\[0\]\.content has 81,631 characters; the limit is 32,000 "
                                         r"\(GPT_DEMO_MAX_INPUT_CHARS\)$"):
        engine.render_chat(HUGE, engine.params(max_tokens=8))


def test_render_chat_fits_a_huge_message_in_the_window(engine):
    params = engine.params(max_tokens=8, temperature=0)
    rendered = roomy(engine).render_chat(HUGE, params)
    assert rendered.clipped_tokens > 0
    assert len(rendered.ids) + params.max_tokens <= engine.context_window
    assert "What sat on the mat?" in engine.tokenizer.decode(rendered.ids[-30:])


def test_a_system_prompt_bigger_than_the_budget_is_a_clear_error(engine):
    conv = Conversation(system="rules " * 300).add("user", "Hi")
    with pytest.raises(ValueError, match=r"the system prompt alone needs \d+ tokens; the budget is 50"):
        conv.prompt_ids(engine.tokenizer, budget=50)


def test_an_empty_conversation_is_refused(engine):
    with pytest.raises(ValueError, match="no messages"):
        Conversation().prompt_ids(engine.tokenizer, budget=100)


@pytest.mark.slow
def test_a_huge_message_is_answered_not_crashed(engine):
    # ~8k tokens of prefill on CPU: 25-55 s on a 2-core machine, hence `slow`.
    result = roomy(engine).chat(HUGE, max_tokens=8, temperature=0)
    assert result.text.strip()
    assert 0 < result.prompt_tokens and result.prompt_tokens + 8 <= engine.context_window


class CountingTokenizer:
    """The real tokenizer, counting what it is asked to do: renders and characters tokenized."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.renders = 0  # chat-template applications
        self.chars = 0  # characters passed to the tokenizer

    def __call__(self, text, **kwargs):
        self.chars += len(text)
        return self._tokenizer(text, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self.renders += 1
        return self._tokenizer.apply_chat_template(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_truncating_a_long_history_costs_linear_tokenizer_work(engine):
    """Dropping turns one at a time re-rendered the whole history per dropped turn: quadratic."""
    work = {}
    for turns in (250, 500):
        conv = long_conversation(turns // 2 - 1)  # (turns // 2 - 1) pairs + system + newest: ~turns messages
        tok = CountingTokenizer(engine.tokenizer)
        rendered = conv.prompt_ids(tok, budget=1500)
        assert len(rendered.ids) <= 1500 and rendered.dropped_messages > turns - 60
        # As few turns dropped as possible: one more kept would not fit.
        kept = len(conv.turns) - rendered.dropped_messages
        assert len(conv.render(engine.tokenizer, conv.turns[-kept - 1 :])) > 1500
        assert tok.renders <= 2 * math.log2(turns) + 3
        work[turns] = tok.chars
    # Twice the history, about twice the work (the one full render dominates); quadratic would be ~4x.
    assert work[500] < 2.4 * work[250], work


def test_the_message_limits_are_checked_before_any_tokenizing(engine):
    from gpt_demo.limits import Limits

    tok = CountingTokenizer(engine.tokenizer)
    conv = long_conversation(3)
    # The system prompt counts as a message (8 in all), and its 20 characters are the first too many.
    with pytest.raises(ValueError, match=r"^messages has 8 messages; the limit is 5 \(GPT_DEMO_MAX_MESSAGES\)$"):
        conv.prompt_ids(tok, budget=100, limits=Limits(max_messages=5))
    with pytest.raises(ValueError, match=r"^messages\[0\]\.content has 20 characters; the limit is 19 "
                                         r"\(GPT_DEMO_MAX_INPUT_CHARS\)$"):
        conv.prompt_ids(tok, budget=100, limits=Limits(max_input_chars=19))
    with pytest.raises(ValueError, match=r"^messages has 696 characters in all; the limit is 500 "
                                         r"\(GPT_DEMO_MAX_TOTAL_CHARS\)$"):
        conv.prompt_ids(tok, budget=100, limits=Limits(max_total_chars=500))
    assert tok.renders == 0 and tok.chars == 0
