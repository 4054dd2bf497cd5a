"""The hot loop: the one place where tokens are produced.

    >>> from gpt_demo.generation.decoding import decode, run_to_end
    >>> completion = run_to_end(decode(loaded, prompt_ids, GenerationParams(max_tokens=8)))  # doctest: +SKIP

``decode`` is a generator: it yields ``Delta(index, text)`` as soon as text is safe
to show and returns the finished ``Completion``. All ``best_of`` candidates share
one batch: the prompt is prefilled once and its KV cache repeated, since every row
starts from the same prompt (no padding needed). Rows that finish are dropped from
the batch so the rest run faster.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from typing import Generator, Iterator

import torch

from ..models.guard import forward_guard
from .params import GenerationParams
from .results import Choice, Completion, TokenLogprob
from .sampling import choose_tokens
from .text_stream import StopTextTracker


@dataclass
class Delta:
    """New text for choice ``index`` (before best_of selection: candidate index)."""

    index: int
    text: str


def eos_token_ids(loaded) -> set[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    for value in (loaded.tokenizer.eos_token_id, getattr(loaded.model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


def _accepts_logits_to_keep(model) -> bool:
    cached = getattr(model, "_gpt_demo_logits_to_keep", None)
    if cached is None:
        cached = "logits_to_keep" in inspect.signature(model.forward).parameters
        model._gpt_demo_logits_to_keep = cached
    return cached


def _forward(model, input_ids: torch.Tensor, cache):
    kwargs = {"use_cache": True, "past_key_values": cache}
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = 1  # only the last position's logits: saves a (T, vocab) matmul
    with forward_guard(model).shared():
        out = model(input_ids=input_ids, **kwargs)
    return out.logits[:, -1, :].float(), out.past_key_values  # (B, vocab)


def _top_logprobs(tokenizer, logp_row: torch.Tensor, k: int) -> list[tuple[str, float]]:
    values, ids = logp_row.topk(k)
    return [(tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, ids)]


def decode(
    loaded,
    prompt_ids: list[int],
    params: GenerationParams,
    *,
    ignore_eos: bool = False,
    rank_by=None,
) -> Generator[Delta, None, Completion]:
    """Generate ``params.candidates`` continuations of ``prompt_ids``; see the module docstring."""
    model, tokenizer = loaded.model, loaded.tokenizer
    device = model.device
    rows = params.candidates
    seed = params.seed if params.seed is not None else random.randrange(2**31)
    generator = torch.Generator(device=device).manual_seed(seed)
    budget = min(params.max_tokens, loaded.context_window - len(prompt_ids))
    if budget < 1:
        raise ValueError(
            f"prompt has {len(prompt_ids)} tokens, which leaves no room in the "
            f"{loaded.context_window}-token context window; shorten it"
        )
    stops = () if ignore_eos else eos_token_ids(loaded)
    trackers = [StopTextTracker(tokenizer, params.stop) for _ in range(rows)]
    logps: list[list[float]] = [[] for _ in range(rows)]
    details: list[list[TokenLogprob]] = [[] for _ in range(rows)]
    finish = ["length"] * rows
    active = list(range(rows))  # original row index of each batch row still generating
    counts = torch.zeros(rows, model.config.vocab_size, dtype=torch.int32, device=device)  # (B, vocab)

    # Inference mode is thread-local and a generator may be resumed on another thread (gradio
    # streams each step from a worker pool), so it is entered per step and never held across a yield.
    with torch.inference_mode():
        logits, cache = _forward(model, torch.tensor([prompt_ids], device=device), None)
        if rows > 1:
            logits = logits.expand(rows, -1)
            cache.batch_repeat_interleave(rows)
    next_input = None  # (B, 1) the tokens just chosen, fed in at the start of the next step
    for _step in range(budget):
        pending: list[Delta] = []
        with torch.inference_mode():
            if next_input is not None:
                logits, cache = _forward(model, next_input, cache)
            logp = torch.log_softmax(logits, dim=-1)  # (B, vocab) raw model log-probabilities
            next_ids = choose_tokens(
                logits,
                counts,
                temperature=params.temperature,
                top_p=params.top_p,
                frequency_penalty=params.frequency_penalty,
                presence_penalty=params.presence_penalty,
                generator=generator,
            )  # (B,)
            counts.scatter_add_(1, next_ids[:, None], torch.ones_like(next_ids[:, None], dtype=counts.dtype))
            chosen_logp = logp.gather(1, next_ids[:, None]).squeeze(1).tolist()
            keep: list[int] = []
            for b, (row, tok) in enumerate(zip(active, next_ids.tolist())):
                logps[row].append(chosen_logp[b])
                if params.logprobs:
                    top = _top_logprobs(tokenizer, logp[b], params.top_logprobs) if params.top_logprobs else []
                    details[row].append(TokenLogprob(tokenizer.decode([tok]), tok, chosen_logp[b], top))
                if tok in stops:
                    trackers[row].ids.append(tok)
                    finish[row] = "stop"
                    continue
                delta = trackers[row].push(tok)
                if delta:
                    pending.append(Delta(row, delta))
                if trackers[row].stopped:
                    finish[row] = "stop"
                else:
                    keep.append(b)
            if keep and len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                counts, next_ids = counts[index], next_ids[index]
                active = [active[b] for b in keep]
            next_input = next_ids[:, None]
        yield from pending  # before the next forward pass, so text appears as soon as it exists
        if not keep:
            break

    choices = []
    for row in range(rows):
        tail = trackers[row].finish()
        if tail:
            yield Delta(row, tail)
        choices.append(
            Choice(
                index=row,
                text=trackers[row].text,
                token_ids=list(trackers[row].ids),
                finish_reason=finish[row],
                total_logprob=float(sum(logps[row])),
                logprobs=details[row] if params.logprobs else None,
            )
        )
    # best_of: keep the n candidates with the highest total log-probability, best first
    # (also when best_of == n, so choice 0 is always the best); plain n keeps sampling order.
    # ``rank_by(texts) -> scores`` (a reward model) replaces log-probability as the ranking key.
    ranked = params.best_of is not None
    keys = [c.total_logprob for c in choices]
    if ranked and rank_by is not None:
        keys = [float(k) for k in rank_by([c.text for c in choices])]
        if len(keys) != rows:
            raise ValueError(f"rank_by returned {len(keys)} scores for {rows} candidates; it must return one per candidate")
        for choice, key in zip(choices, keys):
            choice.reward = key
    order = sorted(range(rows), key=lambda i: keys[i], reverse=True)
    best = [choices[i] for i in order][: params.n] if ranked else choices
    for i, choice in enumerate(best):
        choice.index = i
    return Completion(choices=best, prompt_tokens=len(prompt_ids), model=loaded.name, seed=seed)


def run_to_end(gen: Generator[Delta, None, Completion]) -> Completion:
    """Drain a ``decode`` generator and return its ``Completion``."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def stream_text(gen: Generator[Delta, None, Completion], *, index: int = 0) -> Iterator[str]:
    """Yield candidate ``index``'s text deltas; returns the ``Completion`` at the end."""
    while True:
        try:
            delta = next(gen)
        except StopIteration as done:
            return done.value
        if delta.index == index:
            yield delta.text
