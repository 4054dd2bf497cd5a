"""The arena leaderboard: online Elo, Bradley-Terry with bootstrap intervals, win rates, FastChat's battle format.

    >>> from gpt_demo.feedback.leaderboard import leaderboard, online_elo
    >>> votes = [{"model_a": "big", "model_b": "small", "winner": "model_a"},
    ...          {"model_a": "small", "model_b": "big", "winner": "tie"}]
    >>> {m: round(r, 3) for m, r in online_elo(votes).items()}
    {'big': 1001.977, 'small': 998.023}
    >>> board = leaderboard(votes, bootstrap=20, seed=0)
    >>> [(row.model, row.games, row.win_rate) for row in board.rows]
    [('big', 2, 0.75), ('small', 2, 0.25)]

Battles are the store's ``Battle`` records (``FeedbackStore.battles()``) or FastChat's battle
dicts (``model_a``, ``model_b``, ``winner``), oldest first. A vote between two answers of one
model says nothing about the ranking of models and is skipped. The formulas are FastChat's
(``fastchat/serve/monitor/elo_analysis.py``):

* Online Elo (``compute_elo``): every rating starts at ``initial`` = 1000; for each battle in order,
  ``E_a = 1 / (1 + base ** ((R_b - R_a) / scale))`` and ``E_b = 1 - E_a``, with base 10, scale 400;
  the score ``S_a`` is 1 (A wins), 0 (B wins) or 0.5 (tie, and both_bad = FastChat's "tie (bothbad)");
  then ``R_a += K (S_a - E_a)`` and ``R_b += K (1 - S_a - E_b)`` with K = 4. Order matters.
* Bradley-Terry (``compute_elo_mle_with_tie``): ``P(A beats B) = 1 / (1 + base ** ((R_b - R_a) / scale))``,
  fitted by maximum likelihood: logistic regression with a +1 column for A and a -1 column for B,
  coefficients times ln(base), a tie counted as half a win each way (label 0.5). Ratings are
  ``scale * r + initial``, shifted so their mean is ``initial`` (or ``anchor`` sits at ``anchor_rating``).
  A small L2 penalty (``l2``, a wide Gaussian prior) keeps the fit finite when a model never lost.
  Order does not matter. Newton's method on the (models x models) Hessian, so no scipy is needed.
* Bootstrap: ``bootstrap`` rounds, each a resample of the battles with replacement (seeded), refitted;
  the 95 % interval is the 2.5 and 97.5 percentiles, and a model's rank is 1 + the number of models
  whose lower bound is above its upper bound (FastChat's ``final_ranking``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

K, SCALE, BASE, INITIAL = 4.0, 400.0, 10.0, 1000.0
L2 = 1e-2  # on the natural scale: a N(0, 10^2) prior, i.e. sd 4000 rating points; only there for separability
# Our verdicts as FastChat's winners, and the score of answer A.
WINNERS = {"a": "model_a", "b": "model_b", "tie": "tie", "both_bad": "tie (bothbad)"}
VERDICT_OF = {w: v for v, w in WINNERS.items()}
SCORE_A = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def _verdict(battle, i: int) -> str:
    if isinstance(battle, Mapping):
        winner = battle.get("winner")
        if winner not in VERDICT_OF:
            raise ValueError(f"battles[{i}].winner={winner!r} is not allowed; choose one of {', '.join(VERDICT_OF)}")
        return VERDICT_OF[winner]
    verdict = getattr(battle, "verdict", None)
    if verdict not in SCORE_A:
        raise ValueError(f"battles[{i}].verdict={verdict!r} is not allowed; choose one of {', '.join(SCORE_A)}")
    return verdict


def games_of(battles: Iterable) -> list[tuple[str, str, float]]:
    """``(model_a, model_b, score of A)`` per cross-model battle, in order; a bad record is a ValueError naming it."""
    out = []
    for i, battle in enumerate(battles):
        get = battle.get if isinstance(battle, Mapping) else lambda key: getattr(battle, key, None)
        a, b = get("model_a"), get("model_b")
        for name, value in (("model_a", a), ("model_b", b)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"battles[{i}].{name}={value!r} is not allowed; every battle names both models")
        verdict = _verdict(battle, i)
        if a != b:
            out.append((a, b, SCORE_A[verdict]))
    return out


def online_elo(battles: Iterable, *, k: float = K, scale: float = SCALE, base: float = BASE,
               initial: float = INITIAL) -> dict[str, float]:
    """FastChat's ``compute_elo``: one Elo update per battle, in the order given."""
    return _online_elo(games_of(battles), k, scale, base, initial)


def _online_elo(games, k=K, scale=SCALE, base=BASE, initial=INITIAL) -> dict[str, float]:
    rating: dict[str, float] = {}
    for a, b, s_a in games:
        ra, rb = rating.get(a, initial), rating.get(b, initial)
        e_a = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        e_b = 1.0 / (1.0 + base ** ((ra - rb) / scale))
        rating[a] = ra + k * (s_a - e_a)
        rating[b] = rb + k * (1.0 - s_a - e_b)
    return rating


def _design(games: list[tuple[str, str, float]]):
    """Models in order of first appearance, and the unique (a, b, score) rows with their counts."""
    models = list(dict.fromkeys(m for a, b, _ in games for m in (a, b)))
    index = {m: i for i, m in enumerate(models)}
    rows = np.array([(index[a], index[b], 2 * s) for a, b, s in games], dtype=np.int64).reshape(-1, 3)
    unique, counts = np.unique(rows, axis=0, return_counts=True)  # (U, 3), (U,)
    return models, unique[:, 0], unique[:, 1], unique[:, 2] / 2.0, counts.astype(np.float64)


def _fit(a, b, y, w, n: int, alpha: float, l2: float, iters: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Natural-scale BT ratings (mean 0) minimising the weighted logistic loss + l2/2 |r|^2, by damped Newton."""

    def loss(r):
        d = alpha * (r[a] - r[b])  # (U,) logits of "A beats B"
        return float((w * (y * np.logaddexp(0, -d) + (1 - y) * np.logaddexp(0, d))).sum() + 0.5 * l2 * r @ r)

    r = np.zeros(n)
    current = loss(r)
    for _ in range(iters):
        p = 0.5 * (1 + np.tanh(alpha * (r[a] - r[b]) / 2))  # sigmoid, overflow-free
        g = alpha * w * (p - y)  # d loss / d r_a per row; d / d r_b is its negative
        grad = np.bincount(a, g, n) - np.bincount(b, g, n) + l2 * r
        h = alpha**2 * w * p * (1 - p)
        hess = np.diag(np.bincount(a, h, n) + np.bincount(b, h, n) + l2)  # (n, n)
        np.add.at(hess, (a, b), -h)
        np.add.at(hess, (b, a), -h)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:  # backtracking: the loss is convex, a short step always helps
            trial = loss(r - t * step)
            if trial <= current - 1e-4 * t * (grad @ step):
                break
            t /= 2
        r, current = r - t * step, trial
        if np.abs(t * step).max() < tol:
            break
    return r - r.mean()


def _to_scale(r: np.ndarray, models, scale, initial, anchor, anchor_rating) -> np.ndarray:
    ratings = scale * r + initial  # mean `initial` (the fit's mean is 0)
    if anchor is not None:
        ratings = ratings + (anchor_rating - ratings[..., [models.index(anchor)]])
    return ratings


def _check_l2(l2) -> float:
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not 0 < l2 < math.inf:
        raise ValueError(f"l2={l2!r} is not allowed; give a small positive number (ratings are only defined up to a"
                         " shift, and a model that never lost would have no finite rating without it)")
    return float(l2)


def _check_anchor(anchor, models):
    if anchor is not None and anchor not in models:
        raise ValueError(f"anchor={anchor!r} is not allowed; choose a model that has battles: {', '.join(models)}")


def bradley_terry(battles: Iterable, *, scale: float = SCALE, base: float = BASE, initial: float = INITIAL,
                  anchor: str | None = None, anchor_rating: float = INITIAL, l2: float = L2) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry ratings on the Elo scale (FastChat's ``compute_elo_mle_with_tie``)."""
    return _bradley_terry(games_of(battles), scale, base, initial, anchor, anchor_rating, l2)


def _bradley_terry(games, scale=SCALE, base=BASE, initial=INITIAL, anchor=None, anchor_rating=INITIAL, l2=L2):
    l2 = _check_l2(l2)
    if not games:
        return {}
    models, a, b, y, w = _design(games)
    _check_anchor(anchor, models)
    r = _fit(a, b, y, w, len(models), math.log(base), l2)
    return dict(zip(models, _to_scale(r, models, scale, initial, anchor, anchor_rating).tolist()))


def bootstrap_bt(battles: Iterable, *, rounds: int = 100, seed: int | None = 0, scale: float = SCALE,
                 base: float = BASE, initial: float = INITIAL, anchor: str | None = None,
                 anchor_rating: float = INITIAL, l2: float = L2) -> tuple[list[str], np.ndarray]:
    """``(models, ratings)`` with ratings (rounds, models): BT refitted on battles resampled with replacement.

    A model absent from a resample gets NaN in that round (``np.nanpercentile`` skips it).
    """
    return _bootstrap_bt(games_of(battles), rounds, seed, scale, base, initial, anchor, anchor_rating, l2)


def _bootstrap_bt(games, rounds=100, seed=0, scale=SCALE, base=BASE, initial=INITIAL, anchor=None,
                  anchor_rating=INITIAL, l2=L2):
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r} is not allowed; give a whole number of bootstrap rounds >= 1")
    l2 = _check_l2(l2)
    if not games:
        return [], np.zeros((rounds, 0))
    models, a, b, y, w = _design(games)
    _check_anchor(anchor, models)
    rng = np.random.default_rng(seed)
    # Resampling n battles with replacement = a multinomial draw over the unique (a, b, score) rows.
    counts = rng.multinomial(len(games), w / w.sum(), size=rounds).astype(np.float64)  # (rounds, U)
    out = np.empty((rounds, len(models)))
    n, alpha = len(models), math.log(base)
    for i, wi in enumerate(counts):
        ratings = _to_scale(_fit(a, b, y, wi, n, alpha, l2), models, scale, initial, anchor, anchor_rating)
        played = (np.bincount(a, wi, n) + np.bincount(b, wi, n)) > 0
        out[i] = np.where(played, ratings, np.nan)
    return models, out


def games_per_model(battles: Iterable) -> dict[str, int]:
    """How many cross-model battles each model fought."""
    out: dict[str, int] = {}
    for a, b, _ in games_of(battles):
        out[a], out[b] = out.get(a, 0) + 1, out.get(b, 0) + 1
    return out


def win_rates(battles: Iterable, models: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """``(models, W)``: W[i, j] is how often model i beat model j (as A or as B; ties half); NaN if they never met."""
    return _win_rates(games_of(battles), models)


def _win_rates(games, models=None):
    models = list(models) if models is not None else list(dict.fromkeys(m for a, b, _ in games for m in (a, b)))
    index = {m: i for i, m in enumerate(models)}
    score, played = np.zeros((len(models),) * 2), np.zeros((len(models),) * 2)
    for a, b, s_a in games:
        if a in index and b in index:
            i, j = index[a], index[b]
            score[i, j] += s_a
            score[j, i] += 1 - s_a
            played[i, j] += 1
            played[j, i] += 1
    return models, np.where(played > 0, score / np.maximum(played, 1), np.nan)


# -- the result ---------------------------------------------------------------------------
@dataclass
class LeaderboardRow:
    model: str
    elo: float
    bt: float
    bt_low: float | None
    bt_high: float | None
    games: int
    win_rate: float  # of all its battles, ties half
    rank: int = 0  # FastChat's: 1 + how many models are surely better (their interval lies above)


@dataclass
class Leaderboard:
    """Rows best first (by Bradley-Terry rating), plus the pairwise win-rate matrix in the same order."""

    rows: list[LeaderboardRow]
    battles: int
    bootstrap: int
    seed: int | None
    win_rates: list[list[float | None]] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return [row.model for row in self.rows]

    def to_dict(self) -> dict:
        """Plain JSON-ready data (missing numbers are None)."""
        return {"battles": self.battles, "bootstrap": self.bootstrap, "seed": self.seed,
                "scale": SCALE, "base": BASE, "initial": INITIAL, "k": K,
                "rows": [asdict(row) for row in self.rows], "models": self.models, "win_rates": self.win_rates}

    def to_markdown(self) -> str:
        """A Markdown table: rank, model, Bradley-Terry rating with its 95 % interval, online Elo, games, win rate."""
        lines = ["| Rank | Model | Rating (BT) | 95% CI | Elo (online) | Games | Win rate |",
                 "| ---: | --- | ---: | :---: | ---: | ---: | ---: |"]
        for row in self.rows:
            ci = "" if row.bt_low is None else f"{row.bt_low:.0f} to {row.bt_high:.0f}"
            lines.append(f"| {row.rank} | {row.model} | {row.bt:.0f} | {ci} | {row.elo:.0f} | {row.games} "
                         f"| {100 * row.win_rate:.1f}% |")
        note = f"{self.battles} battles" + (f", {self.bootstrap} bootstrap rounds (seed {self.seed})" if self.bootstrap else "")
        return "\n".join(lines) + f"\n\n{note}."


def _none_if_nan(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def leaderboard(battles: Iterable, *, bootstrap: int = 100, seed: int | None = 0, anchor: str | None = None,
                anchor_rating: float = INITIAL, l2: float = L2) -> Leaderboard:
    """Everything at once: online Elo, BT with bootstrap intervals (``bootstrap=0``: none), games, win rates."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap!r} is not allowed; give a whole number of rounds >= 0 (0 = no intervals)")
    games = games_of(battles)
    bt = _bradley_terry(games, anchor=anchor, anchor_rating=anchor_rating, l2=l2)
    elo = _online_elo(games)
    low: dict = {}
    high: dict = {}
    if bootstrap and games:
        models, samples = _bootstrap_bt(games, bootstrap, seed, anchor=anchor, anchor_rating=anchor_rating, l2=l2)
        with warnings.catch_warnings():  # a model missing from every resample has no interval
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(samples, [2.5, 97.5], axis=0)
        low, high = dict(zip(models, lo.tolist())), dict(zip(models, hi.tolist()))
    order = sorted(bt, key=lambda m: -bt[m])
    score, count = dict.fromkeys(order, 0.0), dict.fromkeys(order, 0)
    for a, b, s_a in games:
        score[a], score[b] = score[a] + s_a, score[b] + 1 - s_a
        count[a], count[b] = count[a] + 1, count[b] + 1
    rows = [LeaderboardRow(m, elo[m], bt[m], _none_if_nan(low.get(m)), _none_if_nan(high.get(m)), count[m],
                           score[m] / count[m]) for m in order]
    for row in rows:  # by intervals when there are some (FastChat's rule), by rating otherwise
        if row.bt_high is None:
            row.rank = 1 + sum(other.bt > row.bt for other in rows)
        else:
            row.rank = 1 + sum(o.bt_low is not None and o.bt_low > row.bt_high for o in rows)
    _, matrix = _win_rates(games, order)
    table = [[_none_if_nan(x) for x in line] for line in matrix.tolist()]
    return Leaderboard(rows, len(games), bootstrap if games else 0, seed, table)


def plot_win_rates(board: Leaderboard, *, title: str = "Fraction of battles won (row against column, ties half)"):
    """A matplotlib ``Figure`` of the win-rate matrix, models best first (needs matplotlib: the web extra)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'gpt-demo[web]' or pip install matplotlib") from err
    models = board.models
    values = np.array([[np.nan if x is None else x for x in line] for line in board.win_rates], dtype=float)
    values = values.reshape(len(models), len(models))
    size = 2.5 + 0.6 * len(models)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")  # no pyplot: no global figure state
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=0, vmax=1)
    ax.set_xticks(range(len(models)), models, rotation=45, ha="left")
    ax.set_yticks(range(len(models)), models)
    ax.xaxis.tick_top()
    ax.set_xlabel("Model B")
    ax.set_ylabel("Model A")
    for i in range(len(models)):
        for j in range(len(models)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9, y=-0.12 if models else 1.0)
    return fig


# -- FastChat's battle format -------------------------------------------------------------
def to_fastchat(battles: Iterable) -> list[dict]:
    """Store battles as FastChat's ``clean_battle_data`` records, so its notebooks read them.

    Keys: ``model_a``, ``model_b``, ``winner`` (model_a | model_b | tie | tie (bothbad)), ``judge``,
    ``conversation_a``/``conversation_b`` (OpenAI messages), ``turn`` (1), ``anony``, ``tstamp``
    (Unix seconds), ``question_id`` (the prompt's sha256, first 32 hex digits: one per question),
    and ours: ``id`` (the store's row). FastChat's ``language`` is left out (we detect none).
    """
    import hashlib

    out = []
    for b in battles:
        out.append({
            "question_id": hashlib.sha256(b.prompt.encode("utf-8")).hexdigest()[:32],
            "model_a": b.model_a, "model_b": b.model_b, "winner": WINNERS[b.verdict],
            "judge": f"arena_user_{b.session_id}" if b.session_id else "arena_user",
            "conversation_a": [{"role": "user", "content": b.prompt}, {"role": "assistant", "content": b.answer_a}],
            "conversation_b": [{"role": "user", "content": b.prompt}, {"role": "assistant", "content": b.answer_b}],
            "turn": 1, "anony": bool(b.anonymous), "tstamp": datetime.fromisoformat(b.created_at).timestamp(),
            "id": b.id,
        })
    return out


def export_battles(battles: Iterable, path: Path | str) -> int:
    """Write ``to_fastchat(battles)`` to ``path`` as one JSON list (FastChat's clean_battle_*.json); return the count."""
    records = to_fastchat(battles)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return len(records)
