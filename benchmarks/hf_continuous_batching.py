"""transformers' own continuous batching (paged attention on the CPU) against our scheduler (issue 13).

    .venv/bin/python benchmarks/hf_continuous_batching.py                     # K = 1 and 8, 64 tokens, 3 rounds (~2 min on 2 cores)
    .venv/bin/python benchmarks/hf_continuous_batching.py --max-tokens 32     # shorter answers, when HF is slow
    .venv/bin/python benchmarks/hf_continuous_batching.py --attn 'paged|eager'   # the manager's other CPU kernel
    .venv/bin/python benchmarks/hf_continuous_batching.py --rounds 1          # one timing per figure (~1 min)
    .venv/bin/python benchmarks/hf_continuous_batching.py --quick             # tiny settings: checks that it works

Prints exactly one JSON line on stdout; progress goes to stderr.

Issue 13 asks to evaluate transformers 5.x's continuous-batching manager
(``transformers/generation/continuous_batching/continuous_api.py``, ``ContinuousBatchingManager``)
against our scheduler over padded DynamicCache batches, and to choose by measurement. One
process loads the default model once (``load_engine``) and runs the same ``--streams`` (K, default
8) distinct chat prompts (``serve_load.PROMPTS[:K]``, chat template applied), greedy, exactly
``--max-tokens`` (default 64) new tokens each (end tokens do not stop anyone), on three sides:

- ``ours``: ``engine.scheduler.generate(ids, GenerationParams(temperature=0, max_tokens=N),
  ignore_eos=True)``; all K streams are created first (so they are queued and batched together),
  then drained. This is the shipped path: the lean low-bit weights and the compiled decode step
  (``models.native``, waited for before timing), whatever ``describe()["decode"]`` says.
- ``hf_cb``: ``model.init_continuous_batching(GenerationConfig(do_sample=False, eos_token_id=-1),
  ContinuousBatchingConfig(...), WorkloadHints(...))`` on the float32 ``LlamaForCausalLM``, one
  persistent manager started once (its background thread runs in inference mode); each timing is
  ``add_requests`` to the last finished ``get_result``. On the CPU ``switch_to_cb_friendly_attn``
  finds no flash kernel and keeps ``sdpa`` (the model's own; ``paged|eager`` is the other allowed
  CPU implementation, ``--attn``). The paged cache is sized for this workload (``--page-size``,
  default 64 tokens; ``num_blocks`` = K x (blocks one request needs + 1); ``max_batch_tokens`` =
  all prompts' tokens rounded up to 64, so every prompt prefills in one step): left to itself on
  the CPU it takes 60 % of free RAM (``resolve_max_memory_percent``) and an 8192-token batch, and
  the sdpa path's mask spans the whole cache, which made 2 x 16 tokens take ~20 s here.
- ``hf_plain``: ``model.generate`` on one left-padded batch (DynamicCache, the default), float32:
  the "padded" baseline; K = 1 is one unpadded prompt.

Each side first runs a short untimed warm-up at K. Figures per side (median wall over
``--rounds``): ``k1`` / ``kK`` = {wall_s, tokens, tok_s}, tokens being the tokens actually returned;
``ratio_kK_k1`` = aggregate tok/s at K over tok/s at 1; ``ratio_vs_ours_k1`` / ``_kK`` = this side's
tok/s over ours. ``agreement`` counts the K answers whose tokens equal ``hf_plain``'s exactly:
``hf_cb`` (float32 both, so a correctness check of the manager) and ``ours`` (other weights: only
informative). ``features`` says, from the installed source (introspected where it can be), which
of our per-request OpenAI features the manager supports per request; ``feature_notes`` cite the
files and functions. A side that raises records ``error`` and the run goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import PROMPTS  # noqa: E402  (stdlib-only module: importing it loads no model)

RESULT_TIMEOUT_S = 300.0  # one timed batch of the manager may take this long before we call it hung


def log(msg: str) -> None:
    print(f"[hf_cb] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=8, help="K: prompts run together (1..16)")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per prompt (end tokens ignored)")
    p.add_argument("--rounds", type=int, default=3, help="timings per figure; the median is reported")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "paged|eager"], help="HF manager's attention")
    p.add_argument("--page-size", type=int, default=64, help="tokens per page of HF's paged cache")
    p.add_argument("--no-plain", action="store_true", help="skip the padded model.generate baseline")
    p.add_argument("--quick", action="store_true", help="tiny settings (K=2, 8 tokens): checks that it works")
    args = p.parse_args(argv)
    if args.quick:
        args.streams, args.max_tokens, args.rounds = 2, 8, 1
    if not 1 <= args.streams <= len(PROMPTS):
        p.error(f"--streams needs 1..{len(PROMPTS)} (one distinct prompt per stream)")
    if args.max_tokens < 1 or args.rounds < 1 or args.page_size < 4:
        p.error("--max-tokens and --rounds need >= 1, --page-size >= 4")
    return args


def figure(walls: list[float], outputs: list[list[int]]) -> dict:
    """{wall_s, tokens, tok_s} from the median wall; tokens are what the last round returned."""
    wall = statistics.median(walls)
    tokens = sum(len(o) for o in outputs)
    return {"wall_s": round(wall, 3), "tokens": tokens, "tok_s": round(tokens / wall, 2) if wall > 0 else None}


def measure(run, ks: tuple[int, ...], rounds: int, warm) -> tuple[dict, dict]:
    """Time ``run(k) -> list of token lists`` for every k; returns (figures, outputs) keyed 'k1', 'k8'."""
    warm()
    figures, outputs = {}, {}
    for k in ks:
        walls = []
        for r in range(rounds):
            start = time.perf_counter()
            out = run(k)
            walls.append(time.perf_counter() - start)
            log(f"  K={k} round {r + 1}: {sum(map(len, out))} tokens in {walls[-1]:.2f} s")
        figures[f"k{k}"], outputs[f"k{k}"] = figure(walls, out), out
    return figures, outputs


# -- ours ---------------------------------------------------------------------------------
def run_ours(engine, prompt_ids: list[list[int]], k: int, max_tokens: int) -> list[list[int]]:
    from gpt_demo.generation.decoding import run_to_end
    from gpt_demo.generation.params import GenerationParams

    params = GenerationParams(temperature=0, max_tokens=max_tokens)
    # every stream is queued at creation, so the K of them are batched together while drained in turn
    streams = [engine.scheduler.generate(ids, params, ignore_eos=True) for ids in prompt_ids[:k]]
    return [run_to_end(s).choices[0].token_ids for s in streams]


# -- transformers' continuous batching manager --------------------------------------------
def cb_settings(prompt_ids: list[list[int]], k: int, max_tokens: int, page_size: int) -> dict:
    longest = max(len(ids) for ids in prompt_ids[:k]) + max_tokens
    per_request = math.ceil(longest / page_size) + 1  # +1: room for the page a request grows into
    prompt_tokens = sum(len(ids) for ids in prompt_ids[:k])
    return {"page_size": page_size, "num_blocks": k * per_request,
            "max_batch_tokens": max(64, math.ceil(prompt_tokens / 64) * 64), "max_requests_per_batch": k}


class HFManager:
    """One persistent ``ContinuousBatchingManager``; ``run(k)`` sends k prompts and waits for all."""

    def __init__(self, model, prompt_ids, k: int, max_tokens: int, page_size: int, attn: str):
        import torch
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        from transformers.generation.continuous_batching.utils import WorkloadHints

        self.model, self.prompt_ids, self.max_tokens = model, prompt_ids, max_tokens
        self.original_attn = model.config._attn_implementation
        if attn != self.original_attn:
            model.set_attn_implementation(attn)
        self.settings = cb_settings(prompt_ids, k, max_tokens, page_size)
        # eos_token_id=-1: no end token, as ignore_eos on our side; do_sample=False is manager-wide greedy
        gen = GenerationConfig(do_sample=False, max_new_tokens=max_tokens, eos_token_id=-1,
                               pad_token_id=model.config.pad_token_id)
        hints = WorkloadHints(max_prompt_length=max(map(len, prompt_ids[:k])), max_generated_length=max_tokens,
                              num_requests=k)
        self.manager = model.init_continuous_batching(
            generation_config=gen, continuous_batching_config=ContinuousBatchingConfig(**self.settings),
            workload_hints=hints)
        with torch.inference_mode():  # start() hands the caller's inference mode to its loop thread
            self.manager.start()
        self.attn_used = model.config._attn_implementation

    def run(self, k: int, max_tokens: int | None = None) -> list[list[int]]:
        m = self.manager
        rids = m.add_requests(inputs=self.prompt_ids[:k], max_new_tokens=max_tokens or self.max_tokens)
        done: dict = {}
        deadline = time.perf_counter() + RESULT_TIMEOUT_S
        while len(done) < len(rids):
            result = m.get_result(timeout=1)
            if result is not None and result.is_finished():
                if result.error is not None:
                    raise RuntimeError(f"request {result.request_id} failed: {result.error}")
                done[result.request_id] = result.generated_tokens
            elif result is None and not m.is_running():
                fatal = m.background_thread_status.fatal_error
                raise RuntimeError(f"generation thread stopped: {fatal!r}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(rids) - len(done)} of {len(rids)} requests unfinished after "
                                   f"{RESULT_TIMEOUT_S:.0f} s")
        return [list(done[r]) for r in rids]

    def close(self) -> None:
        try:
            self.manager.stop(block=True, timeout=30)
            self.manager.destroy()
        finally:
            if self.model.config._attn_implementation != self.original_attn:
                self.model.set_attn_implementation(self.original_attn)


# -- transformers' plain generate on a left-padded batch ----------------------------------
def run_plain(model, pad_id: int, prompt_ids: list[list[int]], k: int, max_tokens: int) -> list[list[int]]:
    import torch
    from transformers import GenerationConfig

    batch = prompt_ids[:k]
    width = max(map(len, batch))
    ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in batch])  # (k, width), left-padded
    # from the lengths, not ids != pad_id: the pad id may be a real token of a prompt
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])  # (k, width)
    gen = GenerationConfig(do_sample=False, max_new_tokens=max_tokens, eos_token_id=-1, pad_token_id=pad_id)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)  # DynamicCache
    return out[:, width:].tolist()


# -- which of our per-request features the manager has -------------------------------------
def hf_features() -> tuple[dict, dict]:
    from transformers.generation import logits_process
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching import cb_logits_processors as cbl
    from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager
    from transformers.generation.continuous_batching.requests import GenerationOutput

    add_params = set(inspect.signature(ContinuousBatchingManager.add_request).parameters)
    cb_fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)} \
        if dataclasses.is_dataclass(ContinuousBatchingConfig) else set(vars(ContinuousBatchingConfig))
    per_request_classes = {c.__name__ for c in cbl.CLASSIC_TO_CB_PROCESSORS_MAP}
    additive = [n for n in dir(logits_process) if "Frequency" in n or "Presence" in n]
    rep = getattr(logits_process, "RepetitionPenaltyLogitsProcessor", None)
    out_fields = {f.name for f in dataclasses.fields(GenerationOutput)}
    cb = "generation/continuous_batching/"

    features = {
        "per_request_temperature_top_p": {"TemperatureLogitsWarper", "TopPLogitsWarper"} <= per_request_classes
                                         and "per_request_processors" in cb_fields,
        "frequency_presence_penalties": bool(additive) and any(a in add_params for a in ("frequency_penalty",
                                                                                           "presence_penalty")),
        "stop_strings": bool({"stop_strings", "stopping_criteria", "stop"} & add_params),
        "per_request_seed": "seed" in add_params,
        "logprobs": "return_logprobs" in cb_fields and "return_logprobs" in add_params,
        "top_logprobs": "top_logprobs" in out_fields,
        "streaming": "streaming" in add_params,
        "cancel": callable(getattr(ContinuousBatchingManager, "cancel_request", None)),
    }
    notes = {
        "per_request_temperature_top_p": (
            f"partly: {cb}cb_logits_processors.py CLASSIC_TO_CB_PROCESSORS_MAP has per-request Temperature/TopK/TopP "
            "(add_request(**logit_processor_kwargs)), only with ContinuousBatchingConfig(per_request_processors=True) "
            "and only if the GenerationConfig already has a non-default value (else no processor exists and "
            "check_kwargs raises); greedy vs sampling is manager-wide: ContinuousBatchProcessor.__init__ reads "
            "generation_config.do_sample once and ModelRunner._sample (model_runner.py) argmaxes or multinomials "
            "every row, so temperature=0 next to a sampled request needs a tiny-temperature hack"),
        "frequency_presence_penalties": (
            f"no: transformers has no OpenAI additive penalty processor ({additive or 'none found'} in "
            "generation/logits_process.py); RepetitionPenaltyLogitsProcessor (multiplicative) has "
            f"supports_continuous_batching={getattr(rep, 'supports_continuous_batching', None)} and is dropped by "
            "ContinuousBatchingLogitsProcessorList._validate_processors; a processor could not count history "
            "anyway: ModelRunner.compute_batch passes only this step's ids (input_ids[0, logits_indices])"),
        "stop_strings": (
            f"no: {cb}requests.py RequestState.update_and_check_completion stops only on eos_token_id or "
            "max_new_tokens; add_request takes no stop strings or stopping criteria (workaround: stream, match "
            "text ourselves, cancel_request)"),
        "per_request_seed": (
            f"no: one manager-wide ContinuousBatchingConfig.seed; {cb}distributed.py DistributedHelper.set_tp_seed "
            "calls the global torch.manual_seed, and ModelRunner._sample uses torch.multinomial with no "
            "per-request generator, so a request's sample depends on its batch-mates"),
        "logprobs": (
            "manager-wide only: ContinuousBatchingConfig.return_logprobs; ModelRunner._sample returns log of the "
            "chosen token's probability after the logits processors (temperature-scaled), into "
            "GenerationOutput.logprobs; not per request"),
        "top_logprobs": (
            f"no: {cb}requests.py GenerationOutput has generated_tokens and logprobs (chosen token) only; "
            "ModelRunner._sample gathers just the chosen token"),
        "streaming": (
            f"yes: {cb}continuous_api.py ContinuousBatchingManager.add_request(streaming=True) with "
            "request_id_iter / register_result_handler (token ids; detokenizing is ours); generate_batch itself "
            "does not stream"),
        "cancel": (
            f"yes: {cb}continuous_api.py ContinuousBatchingManager.cancel_request(request_id) puts it on "
            "cancel_queue, handled between steps"),
    }
    return features, notes


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import gpt_demo  # noqa: F401  (sets OpenMP env vars before torch loads)
    from gpt_demo.api import load_engine
    from gpt_demo.generation.params import GenerationParams
    from gpt_demo.models import native

    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # eos_token_id=-1 warns on every generate
    K, N, ks = args.streams, args.max_tokens, tuple(sorted({1, args.streams}))
    log("loading the engine")
    engine = load_engine(progress=False)
    model, tok = engine.loaded.model, engine.loaded.tokenizer
    prompt_ids = [engine.render_chat(p, GenerationParams()).ids for p in PROMPTS[:K]]
    log(f"prompt tokens {[len(x) for x in prompt_ids]}; waiting for the compiled decode step")
    native_ready = native.wait(timeout=600)
    report = {
        "benchmark": "hf_continuous_batching", "model": engine.loaded.name, "streams": K, "max_tokens": N,
        "rounds": args.rounds, "greedy": True, "ignore_eos": True, "torch": torch.__version__,
        "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    outputs: dict[str, dict] = {}

    # ours
    side: dict = {"decode": engine.describe()["decode"], "native_ready": native_ready, "error": None}
    try:
        if engine.scheduler is None:
            raise RuntimeError("engine.scheduler is None: this model runs one decode per request")
        side["max_batch"] = engine.scheduler.config.max_batch
        log("ours")
        figs, outputs["ours"] = measure(lambda k: run_ours(engine, prompt_ids, k, N), ks, args.rounds,
                                        lambda: run_ours(engine, prompt_ids, K, 4))
        side.update(figs)
    except Exception as e:  # recorded, the other sides still run
        side["error"] = f"{type(e).__name__}: {e}"
        log(traceback.format_exc())
    report["ours"] = side

    # transformers' continuous batching manager
    side = {"api": "model.init_continuous_batching(...) -> ContinuousBatchingManager, add_requests/get_result",
            "attn_requested": args.attn, "dtype": str(model.dtype).removeprefix("torch."), "error": None}
    manager = None
    try:
        log(f"HF continuous batching ({args.attn})")
        manager = HFManager(model, prompt_ids, K, N, args.page_size, args.attn)
        side["attn_implementation"], side["cb_config"] = manager.attn_used, manager.settings
        figs, outputs["hf_cb"] = measure(manager.run, ks, args.rounds, lambda: manager.run(K, 4))
        side.update(figs)
    except Exception as e:
        side["error"] = f"{type(e).__name__}: {e}"
        log(traceback.format_exc())
    finally:
        if manager is not None:
            try:
                manager.close()
            except Exception as e:
                side["close_error"] = f"{type(e).__name__}: {e}"
    report["hf_cb"] = side

    # transformers' plain generate, left-padded DynamicCache batch
    if not args.no_plain:
        side = {"api": "model.generate(left-padded batch, attention_mask), DynamicCache",
                "attn_implementation": model.config._attn_implementation,
                "dtype": str(model.dtype).removeprefix("torch."), "error": None}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        try:
            log("HF plain generate (padded)")
            figs, outputs["hf_plain"] = measure(lambda k: run_plain(model, pad, prompt_ids, k, N), ks, args.rounds,
                                                lambda: run_plain(model, pad, prompt_ids, K, 2))
            side.update(figs)
        except Exception as e:
            side["error"] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
        report["hf_plain"] = side

    # ratios and agreement
    kk = f"k{K}"
    ours = report["ours"]
    for name in ("ours", "hf_cb", "hf_plain"):
        s = report.get(name)
        if not s or s.get("error"):
            continue
        s[f"ratio_{kk}_k1"] = ratio(s.get(kk, {}).get("tok_s"), s.get("k1", {}).get("tok_s"))
        if name != "ours":
            s["ratio_vs_ours_k1"] = ratio(s.get("k1", {}).get("tok_s"), ours.get("k1", {}).get("tok_s"))
            s[f"ratio_vs_ours_{kk}"] = ratio(s.get(kk, {}).get("tok_s"), ours.get(kk, {}).get("tok_s"))
    plain = outputs.get("hf_plain", {}).get(kk)
    report["agreement"] = {
        "of": K, "reference": "hf_plain",
        "hf_cb": sum(a == b for a, b in zip(outputs["hf_cb"][kk], plain)) if plain and "hf_cb" in outputs else None,
        "ours": sum(a == b for a, b in zip(outputs["ours"][kk], plain)) if plain and "ours" in outputs else None,
    }
    try:
        report["features"], report["feature_notes"] = hf_features()
    except Exception as e:
        report["features"], report["feature_notes"] = None, f"introspection failed: {type(e).__name__}: {e}"
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
