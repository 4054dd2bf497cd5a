"""The rankings store: one SQLite file under ``$GPT_DEMO_HOME`` that the web app and the notebook share.

    >>> from gpt_demo.feedback import FeedbackStore
    >>> store = FeedbackStore(":memory:")
    >>> store.add_ranking("Say hi", ["Hi!", "Go away."], [1, 2], model="smollm2-135m-instruct")
    1
    >>> store.counts()
    {'rankings': 1, 'pairs': 1}
    >>> store.pairs()
    [{'prompt': 'Say hi', 'chosen': 'Hi!', 'rejected': 'Go away.'}]
    >>> store.add_ranking("Say hi", ["Go away.", "Hi!"], [2, 1], model="smollm2-135m-instruct")
    Traceback (most recent call last):
    ...
    gpt_demo.feedback.store.AlreadyStored: ranking already stored as #1 (same prompt, answers and ranks); nothing was added
    >>> store.add_battle("Say hi", "Hello!", "Hi.", "a", model_a="smollm2-360m-instruct", model_b="smollm2-135m-instruct")
    2
    >>> [(b.model_a, b.model_b, b.verdict, b.anonymous) for b in store.battles()]
    [('smollm2-360m-instruct', 'smollm2-135m-instruct', 'a', True)]

The same ranking (prompt, answers with their ranks in any order, verdict) is stored once:
a unique index on its content hash makes that hold across sessions and processes.
Every write is one ``BEGIN IMMEDIATE`` transaction (a ranking and its answers land
together or not at all), checked before anything touches the file. WAL mode lets the
web app, a notebook and an export read while another writes.

An arena vote is a ranking of two answers with a verdict (a | b | tie | both_bad). A
cross-model vote (``add_battle``) also records the model of each answer and whether the
rater voted blind; ``battles()`` reads them back for the leaderboard (``leaderboard.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from ..sqlite_util import Connections
from .migrations import migrate
from .pairs import check_candidates, check_ranks, expand_ranking, verdict_ranks

EXPORT_FORMATS = ("jsonl", "parquet")


class AlreadyStored(ValueError):
    """The same ranking is in the store already; ``ranking_id`` is the stored one. Nothing was added."""

    def __init__(self, ranking_id: int):
        self.ranking_id = int(ranking_id)
        super().__init__(f"ranking already stored as #{self.ranking_id} (same prompt, answers and ranks); nothing was added")


def content_hash(prompt: str, candidates: Sequence[str], ranks: Sequence[int], verdict: str | None = None,
                 models: Sequence[str] | None = None) -> str:
    """sha256 of what a ranking says: the prompt, its (rank, answer) pairs in any shown order, the verdict.

    ``models`` (a battle's model per answer) joins the hash only when given, so rows without it keep theirs.
    """
    content = {"prompt": prompt, "ranked": sorted([int(r), t] for t, r in zip(candidates, ranks)), "verdict": verdict}
    if models is not None:
        content["models"] = sorted([t, m] for t, m in zip(candidates, models))
    return hashlib.sha256(json.dumps(content, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def default_path(home: Path | str) -> Path:
    """Where the store lives inside a data directory."""
    return Path(home) / "feedback.sqlite"


@dataclass
class Ranking:
    """One stored ranking (or arena comparison) as plain data."""

    id: int
    created_at: str
    session_id: str
    prompt: str
    candidates: list[str]
    ranks: list[int]
    model: str
    adapter: str | None = None
    params: dict = field(default_factory=dict)
    source: str = "rank"
    verdict: str | None = None

    def pairs(self) -> list[dict]:
        return expand_ranking(self.prompt, self.candidates, self.ranks)


@dataclass
class Battle:
    """One arena vote: answer A (by ``model_a``) against answer B (by ``model_b``).

    ``anonymous`` is None for votes stored before the store recorded it. A vote from the
    single-model arena has ``model_a == model_b`` (the ``model`` its answers came from).
    """

    id: int
    created_at: str
    prompt: str
    answer_a: str
    answer_b: str
    model_a: str
    model_b: str
    verdict: str
    anonymous: bool | None = None
    session_id: str = ""
    source: str = "arena"

    @property
    def cross_model(self) -> bool:
        return self.model_a != self.model_b


MAX_MODEL_ID_CHARS = 256  # hub ids are at most 96 + 1 + 96; local paths get some room


def check_model_id(name: str, value) -> str:
    """``value`` if it can name a model on the leaderboard, else a ValueError naming the field ``name``."""
    allowed = f"give the model's id (1 to {MAX_MODEL_ID_CHARS} characters, no surrounding spaces or control characters)"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}={value!r} is not allowed; {allowed}")
    if len(value) > MAX_MODEL_ID_CHARS:
        raise ValueError(f"{name}={value[:40]!r}... ({len(value)} characters) is not allowed; {allowed}")
    if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name}={value!r} is not allowed; {allowed}")
    return value


class FeedbackStore:
    """Rankings in SQLite. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self._connections = Connections(self.path, foreign_keys=True)
        self._lock = threading.Lock()
        db = self._connect()
        migrate(db)
        _fill_hashes(db)

    @classmethod
    def open(cls, settings=None) -> "FeedbackStore":
        """The store of ``settings.home`` (default: ``$GPT_DEMO_HOME``)."""
        from ..config import Settings

        return cls(default_path((settings or Settings.from_env()).home))

    def _connect(self) -> sqlite3.Connection:
        return self._connections.get()

    # -- writing ------------------------------------------------------------------
    def add_ranking(
        self,
        prompt: str,
        candidates: Sequence[str],
        ranks: Sequence[int],
        *,
        model: str,
        adapter: str | None = None,
        params: dict | None = None,
        session_id: str = "",
        source: str = "rank",
        verdict: str | None = None,
    ) -> int:
        """Store a ranking (1 = best, a permutation of 1..k) and return its id; bad input stores nothing.

        Raises ``AlreadyStored`` (a ValueError naming the stored id) when the same ranking is there.
        """
        check_candidates(prompt, candidates)
        ranks = verdict_ranks(verdict) if verdict is not None else check_ranks(ranks, len(candidates))
        if verdict is not None and len(candidates) != 2:
            raise ValueError(f"candidates={len(candidates)} answers is not allowed with a verdict; the arena compares 2")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model={model!r} is not allowed; name the model that wrote the answers")
        return self._insert(prompt, candidates, ranks, model=model, adapter=adapter, params=params,
                            session_id=session_id, source=source, verdict=verdict)

    def _insert(self, prompt, candidates, ranks, *, model, adapter, params, session_id, source, verdict,
                model_a: str | None = None, model_b: str | None = None, anonymous: bool | None = None) -> int:
        """One ranking row and its answers in one transaction (inputs already checked)."""
        params_json = json.dumps(params or {}, sort_keys=True, default=str)
        models = None if model_a is None else [model_a, model_b]
        digest = content_hash(prompt, candidates, ranks, verdict, models)
        with self._lock if self.path == ":memory:" else _nolock():
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")  # the write lock: no other writer can insert this ranking meanwhile
            try:
                same = db.execute("SELECT id FROM rankings WHERE content_hash = ?", (digest,)).fetchone()
                if same is not None:
                    raise AlreadyStored(same[0])
                cur = db.execute(
                    "INSERT INTO rankings(created_at, session_id, prompt, model, adapter, params, source, verdict,"
                    " content_hash, model_a, model_b, anonymous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (datetime.now(timezone.utc).isoformat(), session_id or "", prompt, model, adapter,
                     params_json, source, verdict, digest, model_a, model_b,
                     None if anonymous is None else int(anonymous)),
                )
                rid = cur.lastrowid
                db.executemany(
                    "INSERT INTO candidates(ranking_id, position, text, rank) VALUES (?, ?, ?, ?)",
                    [(rid, i, text, rank) for i, (text, rank) in enumerate(zip(candidates, ranks))],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return int(rid)

    def add_comparison(self, prompt: str, a: str, b: str, verdict: str, **kwargs) -> int:
        """The arena's pairwise vote: ``verdict`` is a | b | tie | both_bad (the last two give no pair)."""
        return self.add_ranking(prompt, [a, b], [], verdict=verdict, source=kwargs.pop("source", "arena"), **kwargs)

    def add_battle(
        self,
        prompt: str,
        a: str,
        b: str,
        verdict: str,
        *,
        model_a: str,
        model_b: str,
        anonymous: bool = True,
        params: dict | None = None,
        session_id: str = "",
        source: str = "arena",
    ) -> int:
        """A cross-model arena vote: answer ``a`` by ``model_a`` against ``b`` by ``model_b``; returns its id.

        ``verdict`` is a | b | tie | both_bad; ``anonymous`` says the rater voted before the names were shown
        (FastChat's leaderboard counts only those). A vote between two answers of one model is
        ``add_comparison``'s. The vote also expands to a preference pair, like any arena verdict.
        """
        check_candidates(prompt, [a, b])
        ranks = verdict_ranks(verdict)
        model_a, model_b = check_model_id("model_a", model_a), check_model_id("model_b", model_b)
        if model_a == model_b:
            raise ValueError(f"model_a=model_b={model_a!r} is not allowed; a battle is between two different models"
                             " (store a vote between two answers of one model with add_comparison)")
        if not isinstance(anonymous, bool):
            raise ValueError(f"anonymous={anonymous!r} is not allowed; give True (names hidden until the vote) or False")
        return self._insert(prompt, [a, b], ranks, model=f"{model_a} vs {model_b}", adapter=None, params=params,
                            session_id=session_id, source=source, verdict=verdict,
                            model_a=model_a, model_b=model_b, anonymous=anonymous)

    # -- reading ------------------------------------------------------------------
    def rankings(self) -> Iterator[Ranking]:
        """Every stored ranking, oldest first."""
        db = self._connect()
        rows = db.execute(
            "SELECT id, created_at, session_id, prompt, model, adapter, params, source, verdict FROM rankings ORDER BY id"
        ).fetchall()
        answers: dict[int, list[tuple[int, str, int]]] = {}
        for rid, pos, text, rank in db.execute("SELECT ranking_id, position, text, rank FROM candidates"):
            answers.setdefault(rid, []).append((pos, text, rank))
        for rid, created, session, prompt, model, adapter, params, source, verdict in rows:
            cands = sorted(answers.get(rid, []))
            yield Ranking(rid, created, session, prompt, [c[1] for c in cands], [c[2] for c in cands],
                          model, adapter, json.loads(params), source, verdict)

    def battles(self, *, cross_model: bool = True, anonymous_only: bool = False) -> list[Battle]:
        """Every arena vote, oldest first (the order online Elo needs).

        Votes stored before migration 004 have no model per answer: both are the row's ``model``,
        which makes them single-model votes, left out unless ``cross_model=False``.
        ``anonymous_only`` keeps the votes known to be blind (FastChat's leaderboard rule).
        """
        db = self._connect()
        rows = db.execute(
            "SELECT r.id, r.created_at, r.prompt, a.text, b.text, COALESCE(r.model_a, r.model),"
            " COALESCE(r.model_b, r.model), r.verdict, r.anonymous, r.session_id, r.source"
            " FROM rankings r JOIN candidates a ON a.ranking_id = r.id AND a.position = 0"
            " JOIN candidates b ON b.ranking_id = r.id AND b.position = 1"
            " WHERE r.verdict IS NOT NULL ORDER BY r.id"
        ).fetchall()
        out = [Battle(rid, created, prompt, text_a, text_b, ma, mb, verdict, None if anony is None else bool(anony),
                      session, source)
               for rid, created, prompt, text_a, text_b, ma, mb, verdict, anony, session, source in rows]
        return [b for b in out if (b.cross_model or not cross_model) and (b.anonymous or not anonymous_only)]

    def pairs(self) -> list[dict]:
        """All chosen/rejected pairs in TRL's preference format."""
        return [pair for ranking in self.rankings() for pair in ranking.pairs()]

    def counts(self) -> dict:
        """How many rankings are stored and how many preference pairs they expand to (two SQL counts)."""
        db = self._connect()
        rankings = db.execute("SELECT COUNT(*) FROM rankings").fetchone()[0]
        # A pair is two answers of one ranking with different ranks; ties give none, as in expand_ranking.
        pairs = db.execute(
            "SELECT COUNT(*) FROM candidates a JOIN candidates b ON a.ranking_id = b.ranking_id AND a.rank < b.rank"
        ).fetchone()[0]
        return {"rankings": int(rankings), "pairs": int(pairs)}

    # -- export -------------------------------------------------------------------
    def export(self, path: Path | str, format: str | None = None) -> int:
        """Write the pairs to ``path`` (.jsonl or .parquet) atomically; return how many were written."""
        path = Path(path)
        format = format or (path.suffix.lstrip(".") or "jsonl")
        if format not in EXPORT_FORMATS:
            raise ValueError(f"format={format!r} is not allowed; choose one of {', '.join(EXPORT_FORMATS)}")
        pairs = self.pairs()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            if format == "jsonl":
                with open(tmp, "w", encoding="utf-8") as fh:
                    for pair in pairs:
                        fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
            else:
                _write_parquet(pairs, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return len(pairs)

    def to_dataset(self):
        """The pairs as a ``datasets.Dataset`` with columns prompt, chosen, rejected (needs the ``train`` extra)."""
        from datasets import Dataset

        pairs = self.pairs()
        return Dataset.from_dict({key: [p[key] for p in pairs] for key in ("prompt", "chosen", "rejected")})

    def close(self) -> None:
        self._connections.close()


def _fill_hashes(db: sqlite3.Connection) -> None:
    """Give rows from before migration 003 their content hash; a duplicate among them keeps NULL."""
    missing = db.execute("SELECT id, prompt, verdict FROM rankings WHERE content_hash IS NULL").fetchall()
    if not missing:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for rid, prompt, verdict in missing:
            rows = db.execute("SELECT text, rank FROM candidates WHERE ranking_id = ? ORDER BY position", (rid,)).fetchall()
            digest = content_hash(prompt, [t for t, _ in rows], [r for _, r in rows], verdict)
            db.execute("UPDATE OR IGNORE rankings SET content_hash = ? WHERE id = ?", (digest, rid))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class _nolock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _write_parquet(pairs: list[dict], path: str) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError("format='parquet' needs pyarrow: pip install 'gpt-demo[train]' or pip install pyarrow") from err
    table = pa.table({key: [p[key] for p in pairs] for key in ("prompt", "chosen", "rejected")},
                     schema=pa.schema([(k, pa.string()) for k in ("prompt", "chosen", "rejected")]))
    pq.write_table(table, path)
