"""Conversation: messages, the chat template and truncation to the context window.

    .venv/bin/python -m pytest tests/test_chat.py -q
    .venv/bin/python -m pytest tests/test_chat.py -q -m "not slow"    # skip the ~8k-token prefill
"""

from __future__ import annotations

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


def test_render_chat_fits_a_huge_message_in_the_window(engine):
    params = engine.params(max_tokens=8, temperature=0)
    rendered = engine.render_chat(HUGE, params)
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
    result = engine.chat(HUGE, max_tokens=8, temperature=0)
    assert result.text.strip()
    assert 0 < result.prompt_tokens and result.prompt_tokens + 8 <= engine.context_window
