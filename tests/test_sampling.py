"""Penalties, top-p and the streaming text tracker (pure tensors and the real tokenizer).

    .venv/bin/python -m pytest tests/test_sampling.py -q
"""

from __future__ import annotations

import torch

from gpt_demo.generation.sampling import apply_penalties, top_p_filter
from gpt_demo.generation.text_stream import StopTextTracker


def test_penalties_follow_openais_formula():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    counts = torch.tensor([[0, 1, 2, 5]])
    out = apply_penalties(logits, counts, frequency=0.5, presence=0.25)
    expected = logits - counts * 0.5 - (counts > 0) * 0.25
    assert torch.allclose(out, expected)
    assert out[0, 0] == 1.0  # unseen tokens are untouched
    assert apply_penalties(logits, counts, 0.0, 0.0) is logits


def test_negative_penalties_encourage_repetition():
    out = apply_penalties(torch.zeros(1, 3), torch.tensor([[0, 2, 0]]), frequency=-1.0, presence=-0.5)
    assert out[0].tolist() == [0.0, 2.5, 0.0]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.75))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 + 0.3 >= 0.75
    kept = torch.isfinite(top_p_filter(probs.log(), 0.1))[0].tolist()
    assert kept == [True, False, False, False]  # the top token always stays
    assert torch.equal(top_p_filter(probs.log(), 1.0), probs.log())


def push_all(tracker, ids):
    deltas = [tracker.push(i) for i in ids]
    deltas.append(tracker.finish())
    return deltas


def test_multibyte_text_is_never_split(engine):
    tok = engine.tokenizer
    text = "héllo 🙂 世界, naïve café — ünïcödé 🎉🎉"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # some characters span several tokens
    deltas = push_all(StopTextTracker(tok), ids)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_a_stop_sequence_spanning_tokens_is_cut_and_never_shown(engine):
    tok = engine.tokenizer
    text = "First line. The END OF STORY marker then more text"
    stop = "END OF STORY"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(tok(stop, add_special_tokens=False)["input_ids"]) > 1
    tracker = StopTextTracker(tok, stop=(stop,))
    deltas = push_all(tracker, ids)
    assert tracker.stopped
    assert "".join(deltas) == "First line. The "
    assert not any("END" in d for d in deltas)


def test_held_back_text_is_released_when_the_stop_never_completes(engine):
    tok = engine.tokenizer
    text = "It ends with END OF"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tracker = StopTextTracker(tok, stop=("END OF STORY",))
    streamed = "".join(tracker.push(i) for i in ids)
    assert streamed == "It ends with "  # " END OF" could still become the stop
    assert streamed + tracker.finish() == text and not tracker.stopped
