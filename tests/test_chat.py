"""Conversation: messages, the chat template and truncation to the context window.

    .venv/bin/python -m pytest tests/test_chat.py -q
"""

from __future__ import annotations

import pytest

from gpt_demo.chat import Conversation


def test_messages_undo_and_clear():
    conv = Conversation.from_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}]
    )
    assert conv.system == "Be brief." and len(conv.turns) == 2
    assert conv.messages[0] == {"role": "system", "content": "Be brief."}
    assert conv.undo() == {"role": "assistant", "content": "Hello!"}
    conv.clear()
    assert conv.turns == [] and conv.undo() is None


@pytest.mark.parametrize("bad", [{"role": "robot", "content": "x"}, {"content": "no role"}, "just text"])
def test_bad_messages_are_named(bad):
    with pytest.raises(ValueError, match="role|messages\\[0\\]"):
        Conversation.from_messages([bad])


def test_the_chat_template_is_used(engine):
    conv = Conversation(system="Be brief.").add("user", "Hi")
    text = engine.tokenizer.decode(conv.render(engine.tokenizer))
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_truncation_drops_the_oldest_turns_but_keeps_system_and_newest(engine):
    tok = engine.tokenizer
    conv = Conversation(system="SYSTEM-PROMPT stays.")
    for i in range(12):
        conv.add("user", f"question {i} " + "blah " * 20)
        conv.add("assistant", f"answer {i} " + "blah " * 20)
    conv.add("user", "NEWEST question?")
    rendered = conv.prompt_ids(tok, budget=200)
    text = tok.decode(rendered.ids)
    assert len(rendered.ids) <= 200
    assert "SYSTEM-PROMPT stays." in text and "NEWEST question?" in text
    assert "question 0 " not in text and rendered.dropped_messages > 0
    assert "dropped the" in rendered.note
    assert conv.prompt_ids(tok, budget=100_000).dropped_messages == 0


def test_a_single_message_longer_than_the_budget_keeps_its_end(engine):
    conv = Conversation().add("user", "BEGINNING " + "filler " * 500 + "THE END")
    rendered = conv.prompt_ids(engine.tokenizer, budget=120)
    text = engine.tokenizer.decode(rendered.ids)
    assert len(rendered.ids) <= 120 and rendered.clipped_tokens > 0
    assert "THE END" in text and "BEGINNING" not in text and "cut" in rendered.note


def test_an_empty_conversation_is_refused(engine):
    with pytest.raises(ValueError, match="no messages"):
        Conversation().prompt_ids(engine.tokenizer, budget=100)


@pytest.mark.slow
def test_a_huge_message_is_answered_not_crashed(engine):
    result = engine.chat("Summarise: " + "the cat sat on the mat. " * 3000 + "What sat on the mat?", max_tokens=8,
                         temperature=0)
    assert result.text and result.prompt_tokens <= engine.context_window - 8
