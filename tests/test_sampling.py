"""Penalties, top-p and the streaming text tracker (pure tensors and the real tokenizer).

    .venv/bin/python -m pytest tests/test_sampling.py -q

The tensor tests need no model; the StopTextTracker tests use the real tokenizer
(``engine.tokenizer``, byte-level BPE) because splitting characters across tokens is
exactly what a toy tokenizer would not show.
"""

from __future__ import annotations

import pytest
import torch

from gpt_demo.generation.sampling import apply_penalties, choose_tokens, top_p_filter
from gpt_demo.generation.text_stream import StopTextTracker

# -- penalties: logit[t] -= count[t] * frequency + (count[t] > 0) * presence ------------------


def test_penalties_follow_openais_formula_on_hand_computed_values():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # (B=1, vocab=4)
    counts = torch.tensor([[0, 1, 2, 5]])
    out = apply_penalties(logits, counts, frequency=0.5, presence=0.25)
    # 2 - 1*0.5 - 0.25 = 1.25 ; 3 - 2*0.5 - 0.25 = 1.75 ; 4 - 5*0.5 - 0.25 = 1.25
    assert out[0].tolist() == pytest.approx([1.0, 1.25, 1.75, 1.25])
    assert out[0, 0] == 1.0  # unseen tokens are untouched
    assert logits[0].tolist() == [1.0, 2.0, 3.0, 4.0]  # the input is not modified in place


def test_presence_is_paid_once_and_frequency_per_occurrence():
    counts = torch.tensor([[1, 10]])
    presence_only = apply_penalties(torch.zeros(1, 2), counts, frequency=0.0, presence=2.0)
    frequency_only = apply_penalties(torch.zeros(1, 2), counts, frequency=2.0, presence=0.0)
    assert presence_only[0].tolist() == [-2.0, -2.0]
    assert frequency_only[0].tolist() == [-2.0, -20.0]


def test_penalties_apply_per_row_of_a_batch():
    logits = torch.zeros(2, 3)  # (B=2, vocab=3)
    counts = torch.tensor([[3, 0, 0], [0, 0, 1]])
    out = apply_penalties(logits, counts, frequency=1.0, presence=0.5)
    assert out.tolist() == [[-3.5, 0.0, 0.0], [0.0, 0.0, -1.5]]


def test_negative_penalties_encourage_repetition():
    out = apply_penalties(torch.zeros(1, 3), torch.tensor([[0, 2, 0]]), frequency=-1.0, presence=-0.5)
    assert out[0].tolist() == [0.0, 2.5, 0.0]


def test_zero_penalties_are_a_no_op():
    logits = torch.randn(2, 5)
    assert apply_penalties(logits, torch.ones(2, 5, dtype=torch.int32), 0.0, 0.0) is logits


# -- top-p ----------------------------------------------------------------------------------


def kept(logits: torch.Tensor, top_p: float) -> list[bool]:
    return torch.isfinite(top_p_filter(logits, top_p))[0].tolist()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert kept(probs.log(), 0.75) == [True, True, False, False]  # 0.5 + 0.3 >= 0.75
    assert kept(probs.log(), 0.85) == [True, True, True, False]  # 0.8 < 0.85: one more is needed
    assert kept(probs.log(), 0.1) == [True, False, False, False]  # the top token always stays
    assert kept(probs.log(), 0.5) == [True, False, False, False]  # 0.5 alone already reaches 0.5
    assert torch.equal(top_p_filter(probs.log(), 1.0), probs.log())


def test_top_p_works_on_unsorted_logits_and_keeps_kept_values():
    probs = torch.tensor([[0.05, 0.3, 0.5, 0.15]])  # the ranking is 2, 1, 3, 0
    out = top_p_filter(probs.log(), 0.75)
    assert torch.isfinite(out)[0].tolist() == [False, True, True, False]
    assert torch.equal(out[0, [1, 2]], probs.log()[0, [1, 2]])


def test_top_p_rows_of_a_batch_are_independent():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]])
    mask = torch.isfinite(top_p_filter(probs.log(), 0.7)).tolist()
    assert mask == [[True, False, False], [True, True, False]]


def test_top_p_set_is_minimal_on_random_distributions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 50, generator=gen) * 3  # (B, vocab)
    for top_p in (0.3, 0.6, 0.9):
        probs = logits.softmax(-1)
        keep = torch.isfinite(top_p_filter(logits, top_p))
        for b in range(logits.shape[0]):
            kept_probs = probs[b][keep[b]]
            assert kept_probs.sum() >= top_p - 1e-6  # reaches top_p
            assert kept_probs.sum() - kept_probs.min() < top_p  # without its least likely token it would not
            dropped = probs[b][~keep[b]]
            assert dropped.numel() == 0 or dropped.max() <= kept_probs.min()  # the kept tokens are the most likely


# -- choose_tokens --------------------------------------------------------------------------


def test_greedy_takes_the_argmax_after_penalties():
    logits = torch.tensor([[5.0, 4.0, 0.0]])
    counts = torch.tensor([[2, 0, 0]])
    common = dict(temperature=0, top_p=1.0, presence_penalty=0.0, generator=None)
    assert choose_tokens(logits, counts, frequency_penalty=0.0, **common).tolist() == [0]
    assert choose_tokens(logits, counts, frequency_penalty=1.0, **common).tolist() == [1]  # 5 - 2 < 4


def test_a_tiny_top_p_always_samples_the_top_token():
    logits = torch.tensor([[0.0, 1.0, 0.5, 0.9]]).expand(64, -1)  # (B=64, vocab=4), a flat-ish distribution
    counts = torch.zeros(64, 4, dtype=torch.int32)
    ids = choose_tokens(logits, counts, temperature=1.5, top_p=0.01, frequency_penalty=0.0, presence_penalty=0.0,
                        generator=torch.Generator().manual_seed(1))
    assert set(ids.tolist()) == {1}
    ids = choose_tokens(logits, counts, temperature=1.5, top_p=1.0, frequency_penalty=0.0, presence_penalty=0.0,
                        generator=torch.Generator().manual_seed(1))
    assert len(set(ids.tolist())) > 1  # without top-p the same draw does spread out


# -- StopTextTracker on the real tokenizer --------------------------------------------------


def push_all(tracker: StopTextTracker, ids: list[int]) -> list[str]:
    deltas = [tracker.push(i) for i in ids]
    deltas.append(tracker.finish())
    return deltas


def test_multibyte_text_is_never_split(engine):
    tok = engine.tokenizer
    text = "héllo 🙂 世界, naïve café — ünïcödé 🎉🎉"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    # The test means something only if some tokens are fragments of a character.
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    deltas = push_all(StopTextTracker(tok), ids)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    assert "" in deltas  # fragments were held back until their character was complete


def test_short_multibyte_string_streams_exactly(engine):
    tok = engine.tokenizer
    text = "héllo 🙂 世界"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    deltas = push_all(StopTextTracker(tok), ids)
    assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)


def test_a_stop_sequence_spanning_tokens_is_cut_and_never_shown(engine):
    tok = engine.tokenizer
    text = "First line. The END OF STORY marker then more text"
    stop = "END OF STORY"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(tok(stop, add_special_tokens=False)["input_ids"]) > 1  # it really spans tokens
    tracker = StopTextTracker(tok, stop=(stop,))
    deltas = push_all(tracker, ids)
    assert tracker.stopped and tracker.text == "First line. The "
    assert "".join(deltas) == "First line. The "
    assert not any("END" in d for d in deltas)
    assert tracker.push(ids[0]) == ""  # nothing more once stopped


def test_a_stop_starting_inside_a_token_cuts_mid_token(engine):
    tok = engine.tokenizer
    tracker = StopTextTracker(tok, stop=("llo wor",))
    deltas = push_all(tracker, tok("hello world and more", add_special_tokens=False)["input_ids"])
    assert tracker.stopped and "".join(deltas) == "he"


def test_the_earliest_of_several_stops_wins(engine):
    tok = engine.tokenizer
    tracker = StopTextTracker(tok, stop=("more", "world", "and"))
    deltas = push_all(tracker, tok("hello world and more", add_special_tokens=False)["input_ids"])
    assert "".join(deltas) == "hello "


def test_held_back_text_is_released_when_the_stop_never_completes(engine):
    tok = engine.tokenizer
    text = "It ends with END OF"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tracker = StopTextTracker(tok, stop=("END OF STORY",))
    streamed = "".join(tracker.push(i) for i in ids)
    assert streamed == "It ends with "  # " END OF" could still become the stop
    assert streamed + tracker.finish() == text and not tracker.stopped


def test_a_near_miss_is_released_as_soon_as_it_cannot_be_the_stop(engine):
    tok = engine.tokenizer
    tracker = StopTextTracker(tok, stop=("END OF STORY",))
    streamed = "".join(tracker.push(i) for i in tok("The END OF DAYS came", add_special_tokens=False)["input_ids"])
    assert streamed == "The END OF DAYS came" and not tracker.stopped
    assert tracker.finish() == ""
