"""The generation engine on the real default model: every playground parameter does what it says.

    .venv/bin/python -m pytest tests/test_generation.py -q
"""

from __future__ import annotations

import pytest

from gpt_demo.generation import GenerationParams
from gpt_demo.generation.decoding import decode, run_to_end

STORY = "Write a long story about a dragon who learns to bake bread."


def test_temperature_zero_is_deterministic(engine):
    a = engine.chat(STORY, temperature=0, max_tokens=24)
    b = engine.chat(STORY, temperature=0, max_tokens=24)
    assert a.choices[0].token_ids == b.choices[0].token_ids and a.text


def test_the_same_seed_repeats_and_different_seeds_differ(engine):
    def sample(seed):
        return engine.chat(STORY, temperature=0.8, seed=seed, max_tokens=16).text

    assert sample(11) == sample(11)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_stop_sequences_cut_the_output_and_never_appear(engine):
    full = engine.chat(STORY, temperature=0, max_tokens=40).text
    words = full.split()
    stop = words[len(words) // 2]
    stopped = engine.chat(STORY, temperature=0, max_tokens=40, stop=[stop, "zzzz"])
    assert stop not in stopped.text
    assert stopped.text == full[: full.index(stop)]
    assert 0 < len(stopped.text) < len(full)  # a real cut, not an empty or untouched answer
    assert stopped.choices[0].finish_reason == "stop"
    deltas = list(engine.stream_chat(STORY, temperature=0, max_tokens=40, stop=[stop]))
    assert "".join(deltas) == stopped.text
    assert not any(stop in d for d in deltas)


def repeat_rate(token_ids):
    """Share of generated tokens that repeat an earlier generated token."""
    seen, repeats = set(), 0
    for t in token_ids:
        repeats += t in seen
        seen.add(t)
    return repeats / len(token_ids)


@pytest.mark.parametrize("penalty", ["frequency_penalty", "presence_penalty"])
def test_penalties_lower_repetition(engine, penalty):
    prompt = "apple apple apple apple apple apple apple apple"
    plain = engine.complete(prompt, temperature=0, max_tokens=40).choices[0]
    penalised = engine.complete(prompt, temperature=0, max_tokens=40, **{penalty: 2.0}).choices[0]
    assert repeat_rate(plain.token_ids) > 0.5  # the prompt really is repetition-prone
    assert repeat_rate(penalised.token_ids) < repeat_rate(plain.token_ids) - 0.2


def test_best_of_returns_the_candidate_with_the_highest_logprob_per_token(engine):
    params = engine.params(temperature=1.0, seed=5, max_tokens=12)
    prompt_ids = engine.render_chat("Name a fruit.", params).ids
    everyone = engine.chat("Name a fruit.", params, best_of=4, n=4)
    means = [c.mean_logprob for c in everyone.choices]
    assert len(means) == 4 and means == sorted(means, reverse=True)  # best first, per token
    assert len({tuple(c.token_ids) for c in everyone.choices}) > 1  # real alternatives to choose from
    # total_logprob is what the model says when it scores the answer on its own, in one forward pass.
    # score() runs the float32 model and generation the 4-bit lean path with bf16 activations, which
    # stays within 1 % (test_fast_decode checks the mean on real answers).
    scores = [engine.score(prompt_ids, c.token_ids) for c in everyone.choices]
    for choice, score in zip(everyone.choices, scores):
        assert choice.total_logprob == pytest.approx(score, abs=1e-2 + 1e-2 * abs(score))
    per_token = [score / len(c.token_ids) for score, c in zip(scores, everyone.choices)]
    assert max(range(4), key=per_token.__getitem__) == 0
    # Same seed and batch shape: best_of=4 samples the same four candidates and keeps the top one(s).
    best = engine.chat("Name a fruit.", params, best_of=4, n=1)
    assert len(best.choices) == 1
    assert best.choices[0].token_ids == everyone.choices[0].token_ids and best.text == everyone.text
    two = engine.chat("Name a fruit.", params, best_of=4, n=2)
    assert [c.token_ids for c in two.choices] == [c.token_ids for c in everyone.choices[:2]]
    # The low-level generator agrees, and streaming best_of shows the winner.
    low = run_to_end(decode(engine.loaded, prompt_ids, params.replace(best_of=4)))
    assert low.choices[0].token_ids == best.choices[0].token_ids
    assert "".join(engine.stream_chat("Name a fruit.", params, best_of=4)) == best.text


def test_max_tokens_is_reached_and_never_exceeded(engine):
    for limit in (1, 7, 12):
        choice = engine.chat(STORY, temperature=0.7, seed=1, max_tokens=limit).choices[0]
        assert len(choice.token_ids) == limit and choice.finish_reason == "length"
    short = engine.chat("What is the capital of France?", temperature=0, max_tokens=30).choices[0]
    assert len(short.token_ids) <= 30 and short.finish_reason == "stop"


def test_next_token_probabilities_sorted_and_sharpen_as_temperature_falls(engine):
    text = "The best thing about AI is its ability to"
    tables = {t: engine.next_tokens(text, top_k=10, temperature=t) for t in (0.5, 1.0, 1.5)}
    for rows in tables.values():
        probs = [r.prob for r in rows]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert tables[0.5][0].prob > tables[1.0][0].prob > tables[1.5][0].prob
    assert tables[0.5][0].token == tables[1.0][0].token  # same ranking, different shape
    greedy = engine.next_tokens(text, top_k=3, temperature=0)
    assert greedy[0].prob == 1.0 and greedy[0].token == tables[1.0][0].token


def test_the_system_prompt_changes_the_answer(engine):
    question = "What is the capital of France?"
    plain = engine.chat(question, temperature=0, max_tokens=20).text
    poet = engine.chat(question, temperature=0, max_tokens=20, system="You are a poet. Answer in rhyme.").text
    assert "Paris" in plain and plain != poet


def test_streaming_equals_the_whole_answer(engine):
    deltas = list(engine.stream_chat(STORY, temperature=0, max_tokens=30))
    assert len(deltas) > 5  # it really streams
    assert "".join(deltas) == engine.chat(STORY, temperature=0, max_tokens=30).text


def test_n_choices_and_logprobs(engine):
    result = engine.chat("Name a colour.", n=3, temperature=1.0, seed=2, max_tokens=6, logprobs=True, top_logprobs=3)
    assert len(result.choices) == 3 and [c.index for c in result.choices] == [0, 1, 2]
    for choice in result.choices:
        assert len(choice.logprobs) == len(choice.token_ids)
        for entry in choice.logprobs:
            assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
            assert entry.top_logprobs[0][1] >= entry.logprob - 1e-5
        assert choice.total_logprob == pytest.approx(sum(e.logprob for e in choice.logprobs), abs=1e-4)


def test_injected_start_and_restart_text(engine):
    raw = engine.complete("Human: Hello there.", temperature=0, max_tokens=8, stop=["\n"],
                          inject_start_text="\nAI:", inject_restart_text="\nHuman:")
    assert raw.text.startswith("\nAI:") and raw.text.endswith("\nHuman:")
    streamed = "".join(engine.stream_complete("Human: Hello there.", temperature=0, max_tokens=8, stop=["\n"],
                                              inject_start_text="\nAI:", inject_restart_text="\nHuman:"))
    assert streamed == raw.text
    chat = engine.chat("Greet me.", temperature=0, max_tokens=8, inject_start_text="Ahoy",
                       inject_restart_text="\nUser:")
    assert chat.text.startswith("Ahoy") and chat.text.endswith("\nUser:")
    assert len(chat.text) > len("Ahoy\nUser:")  # the model answered in between


@pytest.mark.parametrize(
    "override, field",
    [({"temperature": 9}, "temperature=9"), ({"top_p": 0}, "top_p=0"), ({"best_of": 0}, "best_of=0"),
     ({"max_tokens": -5}, "max_tokens=-5"), ({"temprature": 1}, "temprature")],
)
def test_bad_overrides_raise_before_generating(engine, override, field):
    with pytest.raises(ValueError, match=field):
        engine.chat("hi", **override)


def test_raw_prompts_longer_than_the_window_keep_their_end(engine):
    import copy

    from gpt_demo.limits import Limits

    roomy = copy.copy(engine)  # 45,000 characters is over the default character limit (32,000)
    roomy.limits = Limits(max_input_chars=100_000)
    params = GenerationParams(max_tokens=4, temperature=0)
    rendered = roomy.render_raw("word " * 9000, params)
    assert rendered.clipped_tokens > 0 and len(rendered.ids) <= engine.context_window - 4
    assert rendered.ids[-3:] == roomy.tokenizer("word " * 9000)["input_ids"][-3:]  # the end is kept
    with pytest.raises(ValueError, match=r"^prompt has 45,000 characters; the limit is 32,000"):
        engine.render_raw("word " * 9000, params)


def test_a_stream_can_be_resumed_on_other_threads(engine):
    """Gradio pulls each streamed step from a worker pool: inference mode must not be held across a yield."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    stream = engine.stream_chat("Count from one to ten.", temperature=0, max_tokens=24)
    pieces, threads = [], set()

    def step():
        threads.add(threading.get_ident())
        return next(stream, None), torch.is_inference_mode_enabled()

    pools = [ThreadPoolExecutor(max_workers=1), ThreadPoolExecutor(max_workers=1)]
    try:
        for i in range(1000):
            piece, inference_mode_left_on = pools[i % 2].submit(step).result()  # alternate two threads
            assert not inference_mode_left_on
            if piece is None:
                break
            pieces.append(piece)
    finally:
        for pool in pools:
            pool.shutdown()
    assert len(threads) == 2 and len(pieces) > 3
    assert "".join(pieces) == engine.chat("Count from one to ten.", temperature=0, max_tokens=24).text


def test_best_of_ranks_by_mean_logprob_not_total():
    """The shortest candidate has the highest total but not the highest mean: the mean wins (OpenAI's rule)."""
    from gpt_demo.generation.decoding import select_best
    from gpt_demo.generation.results import Choice

    short = Choice(0, "Yes.", [11, 2], "stop", total_logprob=-1.2)  # total -1.2, mean -0.6
    long = Choice(1, "A ripe red apple.", [5, 6, 7, 8, 9, 2], "stop", total_logprob=-1.8)  # total -1.8, mean -0.3
    middle = Choice(2, "Maybe a pear.", [3, 4, 5, 2], "stop", total_logprob=-1.6)  # total -1.6, mean -0.4
    assert max([short, long, middle], key=lambda c: c.total_logprob) is short  # the old key would pick it
    best = select_best([short, long, middle], n=2)
    assert [c.text for c in best] == ["A ripe red apple.", "Maybe a pear."]
    assert [c.index for c in best] == [0, 1]
    assert best[0].mean_logprob == pytest.approx(-0.3)


def test_decoding_raises_no_deprecation_warning(engine):
    """transformers 5 renamed past_key_values to cache (removal in 5.40): our loop uses the new name."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        streamed = "".join(engine.stream_chat("Hi", temperature=0, max_tokens=6))
        done = engine.chat("Hi", temperature=0, max_tokens=6, n=2, best_of=2)
    assert streamed and done.choices
    bad = [f"{w.category.__name__}: {w.message}" for w in caught
           if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert bad == []
