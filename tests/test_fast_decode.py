"""The lean low-bit decode path (models/lowbit, lean_llama, native, decode_path) on the real default model.

The quality guard of the fast-decode issue: the 4-bit weights are the GGUF's own, greedy answers
agree with the float32 path, and the mean token log-likelihood stays within 1 %.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gpt_demo.generation.decoding import decode, run_to_end
from gpt_demo.generation.params import GenerationParams

SFT = Path(__file__).resolve().parents[2] / "shared" / "data" / "sft" / "sft.jsonl"

# Ten fixed prompts of different kinds and lengths (facts, code, lists, a story, arithmetic).
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis to a ten-year-old.",
    "List three uses of a paperclip.",
    "Write a Python function that reverses a string.",
    "Tell me a story about a robot.",
    "What is 12 times 7?",
    "Give me a recipe for pancakes.",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish and German.",
]


def greedy_ids(engine, prompt: str, tokens: int = 32) -> list[int]:
    params = GenerationParams(temperature=0, max_tokens=tokens)
    ids = engine.render_chat(prompt, params).ids
    return run_to_end(decode(engine.loaded, ids, params, ignore_eos=True)).choices[0].token_ids


def test_the_default_cpu_path_is_the_int4_lean_path_and_says_so(engine, float_engine):
    assert engine.loaded.lean is not None and engine.loaded.lean.weights == "int4"
    assert engine.loaded.lean.head_kind == "int8"
    said = engine.describe()["decode"]
    assert "lean int4" in said and "Q4_1" in said and "attention maps" in said and "float32" in said
    assert float_engine.loaded.lean is None and "decode=float" in float_engine.describe()["decode"]
    # The footprint counts the low-bit copies on top of the float32 model that look-inside uses.
    assert engine.describe()["memory_footprint_mb"] > float_engine.describe()["memory_footprint_mb"]


def test_4bit_blocks_rebuilt_from_the_cache_are_the_ggufs_own(engine):
    """Every cached float weight is d * q + m of a Q4_1 block: quantize_q4_1 finds those values again exactly."""
    from gpt_demo.models.lowbit import dequantize_q4_1, quantize_q4_1

    layers = engine.loaded.model.model.layers
    for block in (layers[0], layers[15], layers[-1]):
        for linear in (block.self_attn.q_proj, block.self_attn.v_proj, block.mlp.down_proj):
            w = linear.weight.detach()
            q, scale, low = quantize_q4_1(w)
            assert int(q.min()) >= 0 and int(q.max()) <= 15
            assert torch.equal(dequantize_q4_1(q, scale, low), w)
    # A float model that was never Q4_1 is only approximated (so the check above can fail).
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(dequantize_q4_1(*quantize_q4_1(w)), w)


def test_the_int4_kernel_computes_what_the_q4_1_weights_say():
    from gpt_demo.models.lowbit import Int4Linear, dequantize_q4_1, quantize_q4_1

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(96, 64, generator=g), torch.randn(32, 64, generator=g)
    layer = Int4Linear.from_weights([a, b])  # fused: one call, both outputs
    x = torch.randn(3, 64, generator=g).bfloat16()
    ref = x.float() @ torch.cat([dequantize_q4_1(*quantize_q4_1(w)) for w in (a, b)]).t()
    out = layer(x).float()
    assert out.shape == (3, 128)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_greedy_answers_agree_with_float32_for_32_tokens_except_at_near_ties(engine, float_engine):
    """Most prompts agree for all 32 tokens; where one parts, float32 itself nearly tied there.

    The int4 kernel takes bf16 activations (8 significant bits), so two tokens whose float32
    logits differ by a few hundredths can swap. The fast path must then have picked float32's
    runner-up, at a margin under 0.1 logits: a rounding difference, not a different model.
    """
    agree = []
    for prompt in PROMPTS:
        fast, ref = greedy_ids(engine, prompt), greedy_ids(float_engine, prompt)
        i = next((i for i, (x, y) in enumerate(zip(fast, ref)) if x != y), None)
        agree.append(32 if i is None else i)
        if i is None:
            continue
        ids = engine.render_chat(prompt, GenerationParams(temperature=0)).ids + ref[:i]
        with torch.inference_mode():
            logits = float_engine.loaded.model(torch.tensor([ids])).logits[0, -1].float()
        (best, second), (best_id, second_id) = logits.topk(2)
        assert int(best_id) == ref[i] and int(second_id) == fast[i], (prompt, i)
        assert float(best - second) < 0.1, f"{prompt!r} parts at token {i} with a float32 margin of {best - second:.3f}"
    print("tokens agreeing per prompt:", agree)
    assert sum(n == 32 for n in agree) >= 6, agree  # 7 of these 10 here; the benchmark's 10: 8


@pytest.mark.skipif(not SFT.is_file(), reason=f"{SFT} (the team's shared SFT data) is not on this machine")
def test_mean_token_log_likelihood_on_sft_answers_is_within_one_percent_of_float32(engine):
    tokenizer, lean, model = engine.tokenizer, engine.loaded.lean, engine.loaded.model
    rows = [json.loads(line) for line in SFT.read_text().splitlines()[:16]]
    fast = ref = 0.0
    count = 0
    with torch.inference_mode():
        for row in rows:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}],
                                                   add_generation_prompt=True, tokenize=False)
            p = tokenizer(prompt, add_special_tokens=False).input_ids
            c = tokenizer(row["completion"], add_special_tokens=False).input_ids[:128]
            ids = torch.tensor([p + c])
            target = torch.tensor(c)[:, None]
            lean_logits = lean.forward(ids, lean.new_cache(1, ids.shape[1]), all_logits=True)[0, len(p) - 1 : -1]
            ref_logits = model(ids).logits[0, len(p) - 1 : -1].float()
            fast += lean_logits.log_softmax(-1).gather(1, target).sum().item()
            ref += ref_logits.log_softmax(-1).gather(1, target).sum().item()
            count += len(c)
    fast, ref = fast / count, ref / count
    assert abs(fast - ref) / abs(ref) < 0.01, (fast, ref)


def test_the_compiled_step_gives_the_python_loops_numbers_exactly(engine):
    from gpt_demo.models import native

    if not native.wait(timeout=600):
        pytest.fail(f"the compiled decode step did not build: {native.status()}")
    assert "compiled decode step: ready" in engine.describe()["decode"]
    lean = engine.loaded.lean
    ids = engine.render_chat("Tell me a story about a robot.", GenerationParams()).ids

    def run(compiled: bool) -> torch.Tensor:
        module = native._state["module"]
        native._state["module"] = module if compiled else None
        try:
            with torch.inference_mode():
                cache = lean.new_cache(1, 8)  # small on purpose: it must grow while decoding
                logits = [lean.forward(torch.tensor([ids]), cache)]
                for _ in range(20):
                    logits.append(lean.forward(logits[-1].argmax(-1, keepdim=True), cache))
                return torch.cat(logits)
        finally:
            native._state["module"] = module

    assert torch.equal(run(compiled=True), run(compiled=False))


def test_rows_at_different_positions_match_each_row_run_alone(engine):
    """The KV cache keeps a length per row (continuous batching needs it): a masked batch row = that row alone."""
    lean = engine.loaded.lean
    ids = engine.render_chat("Why is the sky blue?", GenerationParams()).ids
    with torch.inference_mode():
        alone = []
        for cut in (len(ids), len(ids) - 7):
            cache = lean.new_cache(1, 64)
            lean.forward(torch.tensor([ids[:cut]]), cache)
            alone.append((cache, lean.forward(torch.tensor([[42]]), cache)))
        batch = lean.new_cache(2, alone[0][0].capacity)
        for row, cut in enumerate((len(ids), len(ids) - 7)):
            single = lean.new_cache(1, batch.capacity)
            lean.forward(torch.tensor([ids[:cut]]), single)
            batch.k[:, row], batch.v[:, row] = single.k[:, 0], single.v[:, 0]
            batch.lengths[row] = cut
        together = lean.forward(torch.tensor([[42], [42]]), batch)
    assert batch.lengths.tolist() == [len(ids) + 1, len(ids) - 6]
    for row, (_, logits) in enumerate(alone):
        # Same ops, but a masked row sums over more (zero-weight) keys, so float rounding may differ.
        assert torch.allclose(together[row], logits[0], atol=0.5), (together[row] - logits[0]).abs().max()
        assert int(together[row].argmax()) == int(logits[0].argmax())


def test_every_playground_parameter_works_on_the_fast_path(engine):
    params = dict(temperature=0.8, top_p=0.9, max_tokens=24, seed=7, frequency_penalty=0.6, presence_penalty=0.4,
                  logprobs=True, top_logprobs=3, n=2, best_of=3)
    first = engine.chat("Name some fruits.", **params)
    again = engine.chat("Name some fruits.", **params)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]  # seeded: repeatable
    assert len(first.choices) == 2 and all(len(c.logprobs[0].top_logprobs) == 3 for c in first.choices)
    stopped = engine.chat("Count from 1 to 10, separated by commas.", temperature=0, max_tokens=40, stop=["5"])
    assert "5" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    short = engine.chat("Tell me a story.", temperature=0, max_tokens=5)
    assert short.choices[0].finish_reason == "length" and len(short.choices[0].token_ids) == 5


def test_an_ineligible_model_falls_back_to_float_and_says_why(engine):
    from gpt_demo.models.decode_path import attach_decode_path
    from gpt_demo.models.lean_llama import eligible

    model = engine.loaded.model
    model.config.model_type = "mistral"
    try:
        assert "model_type 'mistral'" in eligible(model)
        probe = type(engine.loaded)(**{**engine.loaded.__dict__, "lean": None})
        attach_decode_path(probe, "auto")
        assert probe.lean is None and "does not serve model_type 'mistral'" in probe.decode_path
        with pytest.raises(ValueError, match="decode='int4' cannot serve this model: model_type 'mistral'"):
            attach_decode_path(probe, "int4")
    finally:
        model.config.model_type = "llama"


def test_bad_decode_settings_are_named():
    from gpt_demo.config import Settings
    from gpt_demo.models import LoadConfig

    with pytest.raises(ValueError, match="decode='fast' is not allowed; choose one of auto, int4, bf16, float"):
        LoadConfig(decode="fast")
    assert Settings.from_env({"GPT_DEMO_DECODE": "float"}).decode == "float"
    assert Settings.from_env({"GPT_DEMO_NATIVE_STEP": "0"}).native_step is False
    with pytest.raises(ValueError, match="decode='x'"):
        Settings.from_env({"GPT_DEMO_DECODE": "x"})


def test_openmp_keeps_its_workers_spinning_briefly_unless_told_otherwise(tmp_path):
    """Set before torch loads (import gpt_demo first), and never over a value the user chose."""
    import subprocess
    import sys

    from gpt_demo.config import THREAD_RUNTIME_DEFAULTS, set_thread_runtime_defaults

    env = {"GOMP_SPINCOUNT": "5"}
    set_thread_runtime_defaults(env)
    assert env == {"GOMP_SPINCOUNT": "5", "OMP_WAIT_POLICY": "ACTIVE"}
    code = ("import os, sys; import gpt_demo; assert 'torch' not in sys.modules; "
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])")
    clean = {k: v for k, v in __import__("os").environ.items() if k not in THREAD_RUNTIME_DEFAULTS}
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["ACTIVE", "300000"], out.stderr


def test_the_compiled_step_over_rows_at_different_lengths_equals_its_python_twin(engine):
    """``layers_step``'s ragged branch (rows at their own positions, a mask), as ``decode`` runs a
    batch whose rows were prefilled apart, gives the Python loop's numbers exactly."""
    from gpt_demo.models import native

    native.wait(timeout=600)
    if native._state["module"] is None:
        pytest.skip(f"the compiled step is not available here: {native.status()}")
    lean = engine.loaded.lean
    prompts = [engine.render_chat(p, GenerationParams()).ids for p in ("Hi!", "What is the capital of France?")]
    assert len(prompts[0]) != len(prompts[1])

    def prefilled():
        cache = lean.new_cache(2, capacity=128)
        for slot, ids in enumerate(prompts):
            view = cache.slot_view(slot)
            lean.forward(torch.tensor([ids]), view)
            cache.lengths[slot] = view.lengths[0]
        return cache

    tokens = torch.tensor([[ids[-1]] for ids in prompts])
    compiled, python = prefilled(), prefilled()
    with torch.inference_mode():
        a = lean.forward(tokens, compiled)
        module, native._state["module"] = native._state["module"], None
        try:
            b = lean.forward(tokens, python)
        finally:
            native._state["module"] = module
    assert compiled.lengths.tolist() == python.lengths.tolist() == [len(p) + 1 for p in prompts]
    assert torch.equal(a, b)
    for slot, n in enumerate(compiled.lengths.tolist()):  # the new keys went to each row's own position
        assert torch.equal(compiled.k[:, slot, :, :n], python.k[:, slot, :, :n])
        assert torch.equal(compiled.v[:, slot, :, :n], python.v[:, slot, :, :n])
