"""Looking inside the real default model: stepping through next-token distributions, attention maps.

    .venv/bin/python -m pytest tests/test_inspect.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

ANIMAL = "The animal didn't cross the street because it was too tired"


def test_temperature_reshapes_the_same_distribution(engine):
    text = "The best thing about AI is its ability to"
    cold, warm, hot = (engine.next_tokens(text, top_k=20, temperature=t) for t in (0.3, 1.0, 1.8))
    assert cold[0].token_id == warm[0].token_id == hot[0].token_id  # same ranking, different shape
    assert cold[0].prob > warm[0].prob > hot[0].prob
    mass = [sum(r.prob for r in rows) for rows in (cold, warm, hot)]  # the top 20 hold less as it flattens
    assert mass[0] > mass[1] > mass[2]
    greedy = engine.next_tokens(text, top_k=3, temperature=0)
    assert greedy[0].prob == 1.0 and greedy[1].prob == 0.0


def test_step_takes_the_argmax_at_temperature_zero_and_shows_the_next_distribution(engine):
    result = engine.step("The capital of France is", temperature=0)
    assert result.token == " Paris" and result.text == "The capital of France is Paris" and result.prob == 1.0
    assert len(result.next) == 10 and result.next[0].prob >= result.next[1].prob


def test_step_with_a_chosen_token_and_with_a_seed(engine):
    rows = engine.next_tokens("I like to eat", top_k=5)
    third = rows[2]
    result = engine.step("I like to eat", temperature=1.0, token_id=third.token_id)
    assert result.text == "I like to eat" + third.token and abs(result.prob - third.prob) < 1e-5
    a = engine.step("Once upon a time", temperature=1.5, seed=7)
    b = engine.step("Once upon a time", temperature=1.5, seed=7)
    assert a.token_id == b.token_id
    tokens = {engine.step("Once upon a time", temperature=2.0, seed=s).token_id for s in range(12)}
    assert len(tokens) > 1  # sampling, not argmax


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 2.5}, "temperature=2.5 is out of range"),
    ({"token_id": -1}, "token_id=-1 is out of range"),
])
def test_step_refuses_bad_values_by_name(engine, kwargs, message):
    with pytest.raises(ValueError, match=message):
        engine.step("Hello", **kwargs)


def test_attention_rows_are_distributions_over_earlier_tokens(engine):
    amap = engine.attention(ANIMAL, layer=5, head=2)
    t = len(amap.tokens)
    assert amap.weights.shape == (t, t) and amap.layer == 5 and amap.head == 2
    assert np.allclose(amap.weights.sum(-1), 1.0, atol=1e-4)
    assert np.allclose(np.triu(amap.weights, 1), 0.0)  # causal: nothing attends to the future
    mean = engine.attention(ANIMAL, layer=5)
    heads = [engine.attention(ANIMAL, layer=5, head=h).weights for h in range(mean.n_heads)]
    assert np.allclose(mean.weights, np.mean(heads, axis=0), atol=1e-5)
    # generation is back on its fast kernel afterwards
    assert engine.loaded.model.config._attn_implementation != "eager"


def test_it_attends_to_animal(engine):
    """The seeds' example: find the heads that link "it" to "animal", and read one of them."""
    (layer, head, weight), *_ = engine.strongest_heads(ANIMAL, "it", "animal")
    assert weight > 0.5
    amap = engine.attention(ANIMAL, layer=layer, head=head)
    assert amap.top_attended("it", k=1)[0][0] == " animal"
    assert (layer, head) == (13, 8)  # the web tab opens on this head


@pytest.mark.parametrize("kwargs, message", [
    ({"layer": 30}, "layer=30 is out of range; allowed: 0 <= layer < 30"),
    ({"head": 9}, "head=9 is out of range; allowed: 0 <= head < 9"),
    ({"text": "  "}, "text='  ' is not allowed"),
    ({"text": "word " * 80}, "too long for a heatmap; allowed: at most 64"),
])
def test_attention_refuses_bad_values_by_name(engine, kwargs, message):
    args = {"text": ANIMAL, **kwargs}
    with pytest.raises(ValueError, match=message):
        engine.attention(**args)


def test_strongest_heads_needs_both_words_in_order(engine):
    with pytest.raises(ValueError, match="target='zebra' is not a token of the text"):
        engine.strongest_heads(ANIMAL, "it", "zebra")
    with pytest.raises(ValueError, match="must come before"):
        engine.strongest_heads(ANIMAL, "animal", "it")


def test_attention_waits_for_a_chat_inside_its_forward_pass_and_changes_no_answer(float_engine):
    """The eager switch must not overlap another user's forward pass (it would drop the causal mask).

    On the float32 transformers path, where chats run the very model the switch changes (the lean
    path's batch against an attention map is test_scheduler's).

    A chat is held inside a real forward pass (a hook on a middle attention layer waits on an Event,
    so the chat holds the guard's shared side); an attention request arrives and must wait; a second
    chat, arriving after it, queues behind it. Then all three finish with the answers they give alone.
    """
    import threading

    from gpt_demo.models.guard import forward_guard

    engine = float_engine
    prompt = dict(messages="Name three colours of the rainbow.", temperature=0, max_tokens=24)
    expected = engine.chat(**prompt).text
    alone = engine.attention(ANIMAL, layer=3)
    model = engine.loaded.model
    sdpa = model.config._attn_implementation
    guard = forward_guard(model)
    layers = [m for name, m in model.named_modules() if name.endswith("self_attn")]
    held, release = threading.Event(), threading.Event()
    names: dict[int, str] = {}  # thread id -> "chat1" | "attention" | "chat2"
    passes: list[str] = []  # whose forward pass started, in order
    impl_in_chat: set[str] = set()  # the attention implementation seen in the middle of chat passes
    results: dict[str, object] = {}

    def on_pass(module, args):
        who = names.get(threading.get_ident())
        if who:
            passes.append(who)

    def in_the_middle(module, args):
        who = names.get(threading.get_ident())
        if who and who.startswith("chat"):
            impl_in_chat.add(model.config._attn_implementation)
        if who == "chat1" and not held.is_set():
            held.set()
            assert release.wait(60)  # hold the first pass (and the guard's shared side) here

    def run(name, func):
        names[threading.get_ident()] = name
        results[name] = func()

    hooks = [model.register_forward_pre_hook(on_pass), layers[len(layers) // 2].register_forward_pre_hook(in_the_middle)]
    chat1 = threading.Thread(target=run, args=("chat1", lambda: engine.chat(**prompt).text))
    look = threading.Thread(target=run, args=("attention", lambda: engine.attention(ANIMAL, layer=3)))
    chat2 = threading.Thread(target=run, args=("chat2", lambda: "".join(engine.stream_chat(**prompt))))
    try:
        chat1.start()
        assert held.wait(60)
        look.start()
        assert guard.wait_until(lambda s: s.writers_waiting == 1, timeout=60), guard.state()  # attention waits
        chat2.start()
        assert guard.wait_until(lambda s: s.readers_waiting == 1, timeout=60), guard.state()  # chat2 waits behind it
        assert "attention" not in results and model.config._attn_implementation == sdpa
        assert passes == ["chat1"]
    finally:
        release.set()
        for t in (chat1, look, chat2):
            t.join(120)
        for h in hooks:
            h.remove()
    assert results["chat1"] == expected and results["chat2"] == expected
    assert np.allclose(results["attention"].weights, alone.weights)
    assert passes.index("attention") == 1 and passes.index("chat2") > 1  # the switch ran between the chats
    assert impl_in_chat == {sdpa}  # no chat pass ever ran with the eager switch on
