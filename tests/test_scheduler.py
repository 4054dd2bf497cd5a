"""The scheduler (generation/scheduler.py): continuous batching on the real default model.

Order is forced with the scheduler's own step counter and state (``wait_for``), never with sleeps.
"""

from __future__ import annotations

import threading

import pytest

from gpt_demo.generation.decoding import Delta, run_to_end
from gpt_demo.generation.params import GenerationParams
from gpt_demo.generation.scheduler import Busy, Scheduler, SchedulerConfig

PROMPTS = [
    "Hi!",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis to a ten-year-old, step by step, in simple words and with an example.",
    "List three unusual uses of a paperclip at the office or at home.",
    "Write a Python function that reverses a string, and explain how it works line by line.",
    "What is twelve times seven? Show the working.",
    "Tell me a long story about a robot who learns to paint, with a happy ending and a twist in the middle.",
]
WAIT = 300  # seconds: generous bounds for a loaded 2-core machine; the conditions themselves are exact


@pytest.fixture(scope="module")
def native_ready(engine):
    from gpt_demo.models import native

    native.wait(timeout=600)  # so alone and together both run the compiled step (the Python twin is tested too)
    return native.status()


def scheduler(engine, **config) -> Scheduler:
    return Scheduler(engine.loaded, SchedulerConfig(**{"prefill_chunk": 16, **config}))


def ids_of(engine, prompt: str) -> list[int]:
    return engine.render_chat(prompt, GenerationParams()).ids


def run_together(sched: Scheduler, jobs: list[tuple[list[int], GenerationParams]], stagger: int = 0):
    """Queue jobs at once (or the second half after ``stagger`` more steps) and drain them in threads."""
    results: list = [None] * len(jobs)

    def drain(i, gen):
        results[i] = run_to_end(gen)

    threads = []
    half = len(jobs) // 2 if stagger else len(jobs)
    for i, (ids, params) in enumerate(jobs):
        if i == half:  # the rest join a batch that is already running
            start = sched.stats()["steps"]
            assert sched.wait_for(lambda s: s["steps"] >= start + stagger and s["running"] > 0, WAIT)
        gen = sched.generate(ids, params, ignore_eos=True)
        threads.append(threading.Thread(target=drain, args=(i, gen)))
        threads[-1].start()
    for t in threads:
        t.join(WAIT)
    return results


def test_greedy_answers_are_token_for_token_the_same_alone_and_batched_joining_at_different_steps(engine,
                                                                                                    native_ready):
    sched = scheduler(engine)
    params = GenerationParams(temperature=0, max_tokens=24)
    jobs = [(ids_of(engine, p), params) for p in PROMPTS]
    assert len({len(ids) for ids, _ in jobs}) == 8  # eight different prompt lengths
    alone = [run_to_end(sched.generate(ids, p, ignore_eos=True)).choices[0].token_ids for ids, p in jobs]
    served = sched.stats()["served"]
    together = run_together(sched, jobs, stagger=5)
    assert [c.choices[0].token_ids for c in together] == alone
    assert sched.stats()["served"] == served + 8
    # They really shared steps: 8 x 24 tokens took far fewer steps than 8 runs one after another would.
    assert sched.stats()["steps"] < 2 * (24 * 8)


def test_seeded_sampling_keeps_its_own_generator_in_a_batch(engine, native_ready):
    sched = scheduler(engine)
    jobs = [(ids_of(engine, p), GenerationParams(temperature=1.0, top_p=0.95, max_tokens=16, seed=100 + i))
            for i, p in enumerate(PROMPTS)]
    alone = [run_to_end(sched.generate(ids, p, ignore_eos=True)).choices[0].token_ids for ids, p in jobs]
    together = run_together(sched, jobs)
    assert [c.choices[0].token_ids for c in together] == alone
    assert len({tuple(a) for a in alone}) == 8


def test_eight_requests_with_their_own_stops_penalties_and_lengths_each_follow_their_own(engine, native_ready):
    sched = scheduler(engine)
    ids = ids_of(engine, "Count from 1 to 30, separated by commas.")
    variants = [
        GenerationParams(temperature=0, max_tokens=40, stop=("7",)),
        GenerationParams(temperature=0, max_tokens=40, stop=("1",)),
        GenerationParams(temperature=0, max_tokens=3),
        GenerationParams(temperature=0, max_tokens=11),
        GenerationParams(temperature=0, max_tokens=30, frequency_penalty=2.0),
        GenerationParams(temperature=0, max_tokens=30, presence_penalty=2.0),
        GenerationParams(temperature=0.7, max_tokens=20, seed=1, n=2, best_of=3),
        GenerationParams(temperature=0, max_tokens=20, logprobs=True, top_logprobs=4),
    ]
    jobs = [(ids, p) for p in variants]
    alone = [run_to_end(sched.generate(i, p, ignore_eos=True)) for i, p in jobs]
    together = run_together(sched, jobs)
    for a, b in zip(alone, together):
        assert [c.token_ids for c in a.choices] == [c.token_ids for c in b.choices]
        assert [c.text for c in a.choices] == [c.text for c in b.choices]
    stop7, stop1, three, eleven, freq, pres, best, logp = together
    assert "7" not in stop7.text and stop7.choices[0].finish_reason == "stop"
    assert "1" not in stop1.text and len(stop1.text) < len(stop7.text)
    assert len(three.choices[0].token_ids) == 3 and len(eleven.choices[0].token_ids) == 11
    plain = run_to_end(sched.generate(ids, GenerationParams(temperature=0, max_tokens=30), ignore_eos=True))
    assert freq.text != plain.text and pres.text != plain.text  # the penalties changed the counting
    assert len(best.choices) == 2 and best.choices[0].mean_logprob >= best.choices[1].mean_logprob
    assert all(len(t.top_logprobs) == 4 for t in logp.choices[0].logprobs)


def test_cancel_frees_the_slot_for_the_next_request_within_a_step(engine, native_ready):
    sched = scheduler(engine, max_batch=1)
    long = sched.generate(ids_of(engine, PROMPTS[7]), GenerationParams(temperature=0, max_tokens=500),
                          ignore_eos=True)
    assert isinstance(next(long), Delta)  # running, and holding the only slot
    waiting = sched.generate(ids_of(engine, PROMPTS[1]), GenerationParams(temperature=0, max_tokens=8))
    assert sched.wait_for(lambda s: s["waiting"] == 1 and s["running"] == 1, WAIT)
    long.close()  # what the Stop button and a dropped HTTP stream do
    assert sched.wait_for(lambda s: s["waiting"] == 0 and (s["running"] + s["prefilling"]) == 1, WAIT)
    request = long.request
    assert request.dropped_at is not None and request.dropped_at - request.cancelled_at <= 1  # the next step
    assert "Paris" in run_to_end(waiting).text


def test_a_stream_nobody_reads_gives_its_place_back_when_dropped(engine, native_ready):
    sched = scheduler(engine, max_batch=1)
    unread = sched.generate(ids_of(engine, PROMPTS[7]), GenerationParams(temperature=0, max_tokens=500),
                            ignore_eos=True)
    request = unread.request
    assert sched.wait_for(lambda s: s["running"] == 1, WAIT)
    del unread  # never started: a bare generator's close() would run none of its code
    assert sched.wait_for(lambda s: s["running"] == 0 and s["rows"] == 0, WAIT)
    assert request.cancelled and request.dropped_at is not None
    assert "Paris" in run_to_end(sched.generate(ids_of(engine, PROMPTS[1]),
                                               GenerationParams(temperature=0, max_tokens=8))).text


def test_a_full_queue_is_refused_as_busy_and_the_rest_still_run(engine, native_ready):
    sched = scheduler(engine, max_batch=1, max_queue=1)
    first = sched.generate(ids_of(engine, PROMPTS[7]), GenerationParams(temperature=0, max_tokens=300),
                           ignore_eos=True)
    next(first)
    second = sched.generate(ids_of(engine, PROMPTS[1]), GenerationParams(temperature=0, max_tokens=8))
    with pytest.raises(Busy, match=r"1 requests are already waiting \(max_queue=1\)"):
        sched.generate(ids_of(engine, PROMPTS[2]), GenerationParams(max_tokens=8))
    first.close()
    assert "Paris" in run_to_end(second).text


def test_the_token_budget_holds_a_request_back_until_one_finishes(engine, native_ready):
    ids = ids_of(engine, PROMPTS[1])
    sched = scheduler(engine, max_batch=4, max_batch_tokens=len(ids) + 40)
    first = sched.generate(ids, GenerationParams(temperature=0, max_tokens=40), ignore_eos=True)
    next(first)
    second = sched.generate(ids, GenerationParams(temperature=0, max_tokens=40), ignore_eos=True)
    assert sched.wait_for(lambda s: s["waiting"] == 1 and s["rows"] == 1, WAIT)  # a free slot, but no tokens
    done = run_to_end(first)
    assert len(done.choices[0].token_ids) == 40
    assert run_to_end(second).choices[0].token_ids == done.choices[0].token_ids


def test_a_long_prompt_is_prefilled_in_chunks_while_running_streams_go_on(engine, native_ready):
    sched = scheduler(engine, prefill_chunk=8)
    running = sched.generate(ids_of(engine, PROMPTS[1]), GenerationParams(temperature=0, max_tokens=200),
                             ignore_eos=True)
    next(running)
    long_ids = ids_of(engine, " ".join(PROMPTS * 3))
    assert len(long_ids) > 200  # at least 25 chunks of 8
    other = sched.generate(long_ids, GenerationParams(temperature=0, max_tokens=4))
    during = 0
    for _ in running:
        if sched.stats()["prefilling"]:
            during += 1
        elif during:
            break
    assert during >= 5  # the running stream kept producing between the long prompt's chunks
    running.close()
    assert len(run_to_end(other).choices[0].token_ids) == 4


def test_an_attention_map_during_a_running_batch_neither_corrupts_nor_deadlocks(engine, native_ready):
    sched = scheduler(engine)
    params = GenerationParams(temperature=0, max_tokens=160)  # 4 x 160 tokens: seconds; the map: a fraction
    jobs = [(ids_of(engine, p), params) for p in PROMPTS[:4]]
    alone = [run_to_end(sched.generate(i, p, ignore_eos=True)).choices[0].token_ids for i, p in jobs]
    gens = [sched.generate(i, p, ignore_eos=True) for i, p in jobs]
    for gen in gens:
        next(gen)  # all four are decoding
    running_at_map = {}

    def look_inside():
        result = engine.attention("The animal didn't cross the street because it was too tired.")
        running_at_map["rows"] = sched.stats()["rows"]
        running_at_map["result"] = result

    thread = threading.Thread(target=look_inside)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()  # no deadlock
    assert running_at_map["rows"] == 4  # the map ran while the batch was still generating
    assert running_at_map["result"] is not None
    assert [run_to_end(g).choices[0].token_ids for g in gens] == alone


def test_the_python_twin_of_the_compiled_batch_step_gives_the_same_answers(engine, native_ready):
    from gpt_demo.models import native

    sched = scheduler(engine)
    jobs = [(ids_of(engine, p), GenerationParams(temperature=0, max_tokens=12)) for p in PROMPTS[:4]]
    compiled = [c.choices[0].token_ids for c in run_together(sched, jobs)]
    module = native._state["module"]
    native._state["module"] = None
    try:
        python = [c.choices[0].token_ids for c in run_together(sched, jobs)]
    finally:
        native._state["module"] = module
    assert python == compiled


def test_batched_answers_equal_the_unbatched_path_greedy_and_seeded(engine, native_ready):
    """GPT_DEMO_BATCHING=0 (one ``decode`` loop per request, the prompt read in one pass) against the
    scheduler (prompts read in chunks of 16, half the requests joining a running batch)."""
    from gpt_demo.api import Engine

    off = Engine(engine.loaded, limits=engine.limits, batching=False)
    assert off.scheduler is None
    sched = scheduler(engine)
    for params in (GenerationParams(temperature=0, max_tokens=24),
                   GenerationParams(temperature=0.9, top_p=0.95, max_tokens=24, seed=11)):
        jobs = [(ids_of(engine, p), params) for p in PROMPTS]
        unbatched = [run_to_end(off.generate(i, p, ignore_eos=True)).choices[0].token_ids for i, p in jobs]
        batched = [c.choices[0].token_ids for c in run_together(sched, jobs, stagger=3)]
        assert batched == unbatched, params


def test_the_bf16_path_adapters_run_on_is_the_same_alone_and_batched(settings):
    """Adapters decode on bf16 weights. oneDNN's one-row bf16 GEMV sums in another order than its
    GEMM, which changed about one output in ten by a bf16 step: every answer parted alone vs batched
    within 128 tokens until one row was padded to two (``lowbit.BF16Linear``)."""
    from gpt_demo.api import load_engine

    bf16 = load_engine(settings=settings, decode="bf16", progress=False)
    assert bf16.describe()["decode"].startswith("lean bf16")
    params = GenerationParams(temperature=0, max_tokens=64)
    jobs = [(ids_of(bf16, p), params) for p in PROMPTS]
    sched = bf16.scheduler
    alone = [run_to_end(sched.generate(i, p, ignore_eos=True)).choices[0].token_ids for i, p in jobs]
    batched = [c.choices[0].token_ids for c in run_together(sched, jobs, stagger=2)]
    bf16.close()
    assert batched == alone


def test_the_cache_gives_memory_back_when_a_long_request_leaves_and_when_the_batch_drains(engine, native_ready):
    from gpt_demo.generation.scheduler import FIRST_CAPACITY

    sched = scheduler(engine, max_batch=2, prefill_chunk=64)
    idle = sched.stats()
    assert idle["cache_tokens"] == FIRST_CAPACITY
    short_ids, params = ids_of(engine, PROMPTS[1]), GenerationParams(temperature=0, max_tokens=120)
    alone = run_to_end(sched.generate(short_ids, params, ignore_eos=True)).choices[0].token_ids
    short = sched.generate(short_ids, params, ignore_eos=True)
    next(short)
    long_ids = ids_of(engine, " ".join(PROMPTS * 5))
    assert len(long_ids) > 4 * FIRST_CAPACITY / 2  # grows the cache past twice its first size
    long = sched.generate(long_ids, GenerationParams(temperature=0, max_tokens=4), ignore_eos=True)
    assert sched.wait_for(lambda s: s["cache_tokens"] >= 2 * FIRST_CAPACITY, WAIT)
    grown = sched.stats()["cache_mb"]
    run_to_end(long)
    # the short row holds well under a quarter of the grown cache: it shrinks while the short one runs
    assert sched.wait_for(lambda s: s["cache_tokens"] == FIRST_CAPACITY, WAIT)
    assert sched.stats()["running"] == 1 and sched.stats()["cache_mb"] < grown
    assert run_to_end(short).choices[0].token_ids == alone  # shrinking kept every key it holds
    assert sched.wait_for(lambda s: s["running"] == 0, WAIT)
    assert sched.stats()["cache_mb"] == idle["cache_mb"]


def test_the_token_budget_counts_every_row_as_long_as_the_longest(engine, native_ready):
    """The dense cache keeps room for the longest sequence in each row, so that is what is counted."""
    short_ids, long_ids = ids_of(engine, PROMPTS[0]), ids_of(engine, PROMPTS[7])
    long_need = len(long_ids) + 40
    sched = scheduler(engine, max_batch=2, max_batch_tokens=2 * long_need - 1)
    assert 2 * (len(short_ids) + 40) <= sched.config.max_batch_tokens
    first = sched.generate(short_ids, GenerationParams(temperature=0, max_tokens=40), ignore_eos=True)
    next(first)
    second = sched.generate(short_ids, GenerationParams(temperature=0, max_tokens=8), ignore_eos=True)
    assert sched.wait_for(lambda s: s["rows"] == 2, WAIT)  # two rows of the longer short one fit: it joins
    run_to_end(first), run_to_end(second)

    longer = sched.generate(long_ids, GenerationParams(temperature=0, max_tokens=40), ignore_eos=True)
    next(longer)
    short = sched.generate(short_ids, GenerationParams(temperature=0, max_tokens=8), ignore_eos=True)
    # their sum fits, but two rows as long as the long one do not: the short one waits, step after step
    assert len(long_ids) + 40 + len(short_ids) + 8 <= sched.config.max_batch_tokens
    start = sched.stats()["steps"]
    assert sched.wait_for(lambda s: s["steps"] >= start + 3, WAIT)
    assert (sched.stats()["waiting"], sched.stats()["rows"]) == (1, 1)
    assert len(run_to_end(longer).choices[0].token_ids) == 40
    assert len(run_to_end(short).choices[0].token_ids) == 8


def test_the_engine_generates_through_its_one_scheduler(engine):
    sched = engine.scheduler
    assert sched is engine.scheduler and sched.config.max_batch == engine.limits.concurrency
    before = sched.stats()["served"]
    engine.chat("Hi", max_tokens=2)
    "".join(engine.stream_chat("Hi", max_tokens=2))
    engine.complete("Once upon a time", max_tokens=2)
    assert sched.stats()["served"] == before + 3


def test_bad_scheduler_settings_are_named(engine):
    with pytest.raises(ValueError, match="max_batch=0 is not allowed; give an integer >= 1"):
        SchedulerConfig(max_batch=0)
    with pytest.raises(ValueError, match="max_queue=0 is not allowed; give an integer >= 1"):
        SchedulerConfig(max_queue=0)  # no room to wait would refuse even an idle model's first request
    with pytest.raises(ValueError, match="lean CPU path only"):
        Scheduler(type(engine.loaded)(**{**engine.loaded.__dict__, "lean": None}))


def test_an_error_in_a_step_fails_the_requests_in_it_and_the_next_ones_still_run(engine, native_ready):
    sched = scheduler(engine)
    lean = engine.loaded.lean
    real = lean.decode_slots
    lean.decode_slots = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("kernel exploded"))
    try:
        doomed = sched.generate(ids_of(engine, PROMPTS[1]), GenerationParams(temperature=0, max_tokens=8),
                                ignore_eos=True)
        with pytest.raises(RuntimeError, match="kernel exploded"):
            run_to_end(doomed)
    finally:
        del lean.decode_slots
    assert lean.decode_slots == real
    assert "Paris" in run_to_end(sched.generate(ids_of(engine, PROMPTS[1]),
                                               GenerationParams(temperature=0, max_tokens=8))).text
    assert sched.stats()["rows"] == 0  # the failed request's slot came back


def test_an_engine_dropped_from_the_cache_stops_its_scheduler(engine):
    from gpt_demo.engine_cache import _close

    sched = engine.scheduler
    run_to_end(sched.generate(ids_of(engine, PROMPTS[0]), GenerationParams(temperature=0, max_tokens=2)))
    thread = sched._thread
    assert thread.is_alive()
    _close(engine)  # what eviction and forget() do
    assert not thread.is_alive() and engine.scheduler is not sched  # the next request gets a fresh one
    assert engine.chat("Hi", max_tokens=2).choices[0].token_ids
