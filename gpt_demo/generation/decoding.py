"""The hot loop: the one place where tokens are produced.

    >>> from gpt_demo.generation.decoding import decode, run_to_end
    >>> completion = run_to_end(decode(loaded, prompt_ids, GenerationParams(max_tokens=8)))  # doctest: +SKIP

``decode`` is a generator: it yields ``Delta(index, text)`` as soon as text is safe
to show and returns the finished ``Completion``. All ``best_of`` candidates share
one batch: the prompt is prefilled once and its KV cache repeated, since every row
starts from the same prompt (no padding needed). Rows that finish are dropped from
the batch so the rest run faster.

What a request needs between two forward passes (its generator, penalty counts, stops,
logprobs) is one ``RequestState``; ``decode`` drives one with its own cache, and the
scheduler (``generation.scheduler``) drives many in one batch with the same code, which is
why a request's answer is the same either way.
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


def _forward(model, input_ids: torch.Tensor, cache, lean=None):
    """(logits (B, vocab) float32 of the last position, the cache grown by ``input_ids``)."""
    if lean is not None:  # the lean low-bit path (models.lean_llama); its cache is a KVCache
        with forward_guard(model).shared():
            return lean.forward(input_ids, cache), cache
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


class RequestState:
    """One request's sequences (its ``params.candidates`` rows) between forward passes.

    Everything per request lives here: its own seeded generator, token counts for the penalties,
    stop-text trackers, log-probabilities and finish reasons. ``decode`` drives one state with
    its own cache; the scheduler (``generation.scheduler``) drives many in one batch, so a
    request's answer does not depend on what else is running.
    """

    def __init__(self, loaded, prompt_ids: list[int], params: GenerationParams, *, ignore_eos: bool = False,
                 rank_by=None):
        self.loaded, self.params, self.rank_by = loaded, params, rank_by
        self.prompt_ids = list(prompt_ids)
        tokenizer = loaded.tokenizer
        self.rows = rows = params.candidates
        self.seed = params.seed if params.seed is not None else random.randrange(2**31)
        self.budget = min(params.max_tokens, loaded.context_window - len(prompt_ids))
        if self.budget < 1:
            raise ValueError(
                f"prompt has {len(prompt_ids)} tokens, which leaves no room in the "
                f"{loaded.context_window}-token context window; shorten it"
            )
        device = loaded.model.device
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self.stops = () if ignore_eos else eos_token_ids(loaded)
        self.trackers = [StopTextTracker(tokenizer, params.stop) for _ in range(rows)]
        self.logps: list[list[float]] = [[] for _ in range(rows)]
        self.details: list[list[TokenLogprob]] = [[] for _ in range(rows)]
        self.finish = ["length"] * rows
        self.active = list(range(rows))  # original row index of each row still generating
        self.counts = torch.zeros(rows, loaded.model.config.vocab_size, dtype=torch.int32, device=device)  # (B, vocab)
        self.steps = 0

    @property
    def done(self) -> bool:
        return not self.active or self.steps >= self.budget

    def take(self, logits: torch.Tensor) -> tuple[list[int], torch.Tensor, list[Delta]]:
        """Choose the next token of every active row from its ``logits`` (rows, vocab).

        Returns (the positions, among the rows passed in, that go on; their chosen tokens; new text).
        """
        params, tokenizer = self.params, self.loaded.tokenizer
        logp = torch.log_softmax(logits, dim=-1)  # (B, vocab) raw model log-probabilities
        next_ids = choose_tokens(
            logits,
            self.counts,
            temperature=params.temperature,
            top_p=params.top_p,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            generator=self.generator,
        )  # (B,)
        self.counts.scatter_add_(1, next_ids[:, None], torch.ones_like(next_ids[:, None], dtype=self.counts.dtype))
        chosen_logp = logp.gather(1, next_ids[:, None]).squeeze(1).tolist()
        keep: list[int] = []
        pending: list[Delta] = []
        for b, (row, tok) in enumerate(zip(self.active, next_ids.tolist())):
            self.logps[row].append(chosen_logp[b])
            if params.logprobs:
                top = _top_logprobs(tokenizer, logp[b], params.top_logprobs) if params.top_logprobs else []
                self.details[row].append(TokenLogprob(tokenizer.decode([tok]), tok, chosen_logp[b], top))
            if tok in self.stops:
                self.trackers[row].ids.append(tok)
                self.finish[row] = "stop"
                continue
            delta = self.trackers[row].push(tok)
            if delta:
                pending.append(Delta(row, delta))
            if self.trackers[row].stopped:
                self.finish[row] = "stop"
            else:
                keep.append(b)
        self.steps += 1
        if self.steps >= self.budget:
            keep = []  # out of tokens: every row left ends with finish_reason "length"
        if len(keep) < len(self.active):
            index = torch.tensor(keep, dtype=torch.long, device=self.counts.device)
            self.counts, next_ids = self.counts[index], next_ids[index]
            self.active = [self.active[b] for b in keep]
        return keep, next_ids, pending

    def complete(self, select: bool = True) -> tuple[list[Delta], Completion]:
        """The text still held back (as deltas) and the finished ``Completion``.

        ``select=False`` leaves best_of's choice to the caller (the scheduler ranks in the caller's thread).
        """
        tails, choices = [], []
        for row in range(self.rows):
            tracker = self.trackers[row]
            tail = tracker.finish()
            if tail:
                tails.append(Delta(row, tail))
            choices.append(
                Choice(
                    index=row,
                    text=tracker.text,
                    token_ids=list(tracker.ids),
                    finish_reason=self.finish[row],
                    total_logprob=float(sum(self.logps[row])),
                    logprobs=self.details[row] if self.params.logprobs else None,
                )
            )
        params = self.params
        best = select_best(choices, params.n, self.rank_by) if select and params.best_of is not None else choices
        return tails, Completion(choices=best, prompt_tokens=len(self.prompt_ids), model=self.loaded.name,
                                 seed=self.seed)


def decode(
    loaded,
    prompt_ids: list[int],
    params: GenerationParams,
    *,
    ignore_eos: bool = False,
    rank_by=None,
) -> Generator[Delta, None, Completion]:
    """Generate ``params.candidates`` continuations of ``prompt_ids``; see the module docstring."""
    state = RequestState(loaded, prompt_ids, params, ignore_eos=ignore_eos, rank_by=rank_by)
    model, device, rows = loaded.model, loaded.model.device, state.rows
    lean = getattr(loaded, "lean", None)
    # Inference mode is thread-local and a generator may be resumed on another thread (gradio
    # streams each step from a worker pool), so it is entered per step and never held across a yield.
    with torch.inference_mode():
        # The lean cache is preallocated for the prompt and a first stretch of answer, then doubles.
        cache = lean.new_cache(1, capacity=len(prompt_ids) + min(state.budget, 256)) if lean is not None else None
        logits, cache = _forward(model, torch.tensor([prompt_ids], device=device), cache, lean)
        if rows > 1:
            logits = logits.expand(rows, -1)
            cache.batch_repeat_interleave(rows)
    while True:
        with torch.inference_mode():
            before = len(state.active)
            keep, next_ids, pending = state.take(logits)
            if keep and len(keep) < before:
                cache.batch_select_indices(torch.tensor(keep, device=device))
        yield from pending  # before the next forward pass, so text appears as soon as it exists
        if state.done:
            break
        with torch.inference_mode():
            logits, cache = _forward(model, next_ids[:, None], cache, lean)
    tails, completion = state.complete()
    yield from tails
    return completion


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
