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
from ..models.tokens import eos_token_ids  # noqa: F401 (one end-token set, PPO uses it too)
from .params import GenerationParams
from .results import Choice, Completion, TokenLogprob
from .sampling import choose_tokens
from .text_stream import StopTextTracker


@dataclass
class Delta:
    """New text for choice ``index`` (before best_of selection: candidate index)."""

    index: int
    text: str


def _forward_parameters(model) -> frozenset[str]:
    """The keyword names ``model.forward`` understands, looking through a peft wrapper's ``**kwargs``."""
    cached = getattr(model, "_gpt_demo_forward_params", None)
    if cached is None:
        params = inspect.signature(model.forward).parameters
        names = set(params)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        base = getattr(model, "get_base_model", None)
        if takes_any and callable(base) and base() is not model:  # PeftModel passes **kwargs through
            names |= _forward_parameters(base())
        cached = frozenset(names)
        model._gpt_demo_forward_params = cached
    return cached


def _forward(model, input_ids: torch.Tensor, cache):
    # transformers 5 renamed past_key_values to cache (the old name warns, and goes in 5.40);
    # a model class written for 4.x still takes the old one.
    accepted = _forward_parameters(model)
    cache_kwarg = "cache" if "cache" in accepted or "past_key_values" not in accepted else "past_key_values"
    kwargs = {"use_cache": True, cache_kwarg: cache}
    if "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = 1  # only the last position's logits: saves a (T, vocab) matmul
    with forward_guard(model).shared():
        out = model(input_ids=input_ids, **kwargs)
    new_cache = getattr(out, "cache", None)
    if new_cache is None:
        new_cache = out.past_key_values
    return out.logits[:, -1, :].float(), new_cache  # (B, vocab)


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
    best = select_best(choices, params.n, rank_by) if params.best_of is not None else choices
    return Completion(choices=best, prompt_tokens=len(prompt_ids), model=loaded.name, seed=seed)


def select_best(choices: list[Choice], n: int, rank_by=None) -> list[Choice]:
    """best_of as OpenAI defines it: the ``n`` candidates with the highest log-probability *per token*.

    Ranking by the total would favour whatever ends first (a one-word answer nearly always
    wins), so the key is ``Choice.mean_logprob``. They come back best first and renumbered,
    also when ``best_of == n``, so choice 0 is always the best. ``rank_by(texts) -> scores``
    (a reward model) replaces log-probability as the key; its scores land in ``Choice.reward``.

        >>> short = Choice(0, "Hi", [1], "stop", total_logprob=-1.0)           # mean -1.0
        >>> long = Choice(1, "Hello there", [1, 2, 3, 4], "stop", total_logprob=-2.0)  # mean -0.5
        >>> [c.text for c in select_best([short, long], n=1)]
        ['Hello there']
    """
    keys = [c.mean_logprob for c in choices]
    if rank_by is not None:
        keys = [float(k) for k in rank_by([c.text for c in choices])]
        if len(keys) != len(choices):
            raise ValueError(f"rank_by returned {len(keys)} scores for {len(choices)} candidates; "
                             "it must return one per candidate")
        for choice, key in zip(choices, keys):
            choice.reward = key
    order = sorted(range(len(choices)), key=lambda i: keys[i], reverse=True)
    best = [choices[i] for i in order][:n]
    for i, choice in enumerate(best):
        choice.index = i
    return best


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
