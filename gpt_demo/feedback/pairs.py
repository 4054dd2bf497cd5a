"""Rankings to preference pairs, and the checks a ranking must pass before it is stored.

    >>> expand_ranking("Say hi", ["Hi!", "Go away.", "Hello there."], [1, 3, 2])
    [{'prompt': 'Say hi', 'chosen': 'Hi!', 'rejected': 'Hello there.'}, {'prompt': 'Say hi', 'chosen': 'Hi!', 'rejected': 'Go away.'}, {'prompt': 'Say hi', 'chosen': 'Hello there.', 'rejected': 'Go away.'}]
    >>> check_ranks([2, 1, 2], 3)
    Traceback (most recent call last):
    ...
    ValueError: ranks=[2, 1, 2] is not allowed; give each of the 3 answers a different rank from 1 to 3 (1 = best): rank 3 is missing, rank 2 is used twice

A ranking of k answers yields k(k-1)/2 pairs (TRL's preference format: ``prompt``,
``chosen``, ``rejected``); answers with equal rank (an arena "tie") yield no pair, and neither
do two answers with the same text (two greedy samples, two adapters that answer alike): "x is
better than x" teaches nothing, and the trainers refuse such a pair.

    >>> expand_ranking("Say hi", ["Hi!", "Hi!"], [1, 2])
    []
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

# How many answers one ranking holds: the store, the web Rank tab's slider and %gpt_rank -k all use these.
MIN_K, MAX_K = 2, 6
VERDICTS = ("a", "b", "tie", "both_bad")


def check_candidates(prompt: str, candidates: Sequence[str]) -> None:
    """Raise ValueError naming the field when the prompt or answers cannot be stored."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt={prompt!r} is not allowed; give a non-empty prompt")
    if not isinstance(candidates, (list, tuple)) or not MIN_K <= len(candidates) <= MAX_K:
        n = len(candidates) if isinstance(candidates, (list, tuple)) else candidates
        raise ValueError(f"candidates={n!r} answers is not allowed; give {MIN_K} to {MAX_K} answers")
    for i, text in enumerate(candidates):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"candidates[{i}]={text!r} is not allowed; every answer needs some text")


def check_ranks(ranks: Sequence, k: int) -> list[int]:
    """``ranks`` as ints if it is a permutation of 1..k, else a ValueError that says what is wrong."""
    allowed = f"give each of the {k} answers a different rank from 1 to {k} (1 = best)"
    try:
        values = [int(r) for r in ranks]
        if any(float(r) != int(r) for r in ranks):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"ranks={list(ranks) if isinstance(ranks, (list, tuple)) else ranks!r} is not allowed; {allowed}") from None
    if len(values) != k:
        raise ValueError(f"ranks={values} is not allowed; {allowed} (got {len(values)} ranks)")
    if sorted(values) == list(range(1, k + 1)):
        return values
    problems = [f"rank {r} is missing" for r in range(1, k + 1) if r not in values]
    problems += [f"rank {r} is out of range" for r in sorted(set(values)) if not 1 <= r <= k]
    problems += [f"rank {r} is used {c} times" if c > 2 else f"rank {r} is used twice"
                 for r, c in sorted(Counter(values).items()) if c > 1]
    raise ValueError(f"ranks={values} is not allowed; {allowed}: {', '.join(problems)}")


def verdict_ranks(verdict: str) -> list[int]:
    """The ranks an arena verdict stands for: a -> [1, 2], b -> [2, 1], tie / both_bad -> [1, 1]."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict={verdict!r} is not allowed; choose one of {', '.join(VERDICTS)}")
    return {"a": [1, 2], "b": [2, 1]}.get(verdict, [1, 1])


def expand_ranking(prompt: str, candidates: Sequence[str], ranks: Sequence[int]) -> list[dict]:
    """Every (better, worse) pair of a ranking, best-ranked chosen answers first."""
    order = sorted(range(len(candidates)), key=lambda i: (ranks[i], i))
    return [
        {"prompt": prompt, "chosen": candidates[i], "rejected": candidates[j]}
        for a, i in enumerate(order)
        for j in order[a + 1 :]
        if ranks[i] < ranks[j] and candidates[i] != candidates[j]
    ]
