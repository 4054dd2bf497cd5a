"""The rankings store's schema as an append-only list of migrations.

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:", isolation_level=None)
    >>> migrate(db)
    4
    >>> migrate(db)          # already there: nothing runs twice
    0

Never edit or reorder a migration that has shipped: add a new one at the end. The
``_migrations`` table records which ones ran, so an old file upgrades in place.
"""

from __future__ import annotations

import sqlite3
from ..sqlite_util import apply_migrations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_rankings",
        """
        CREATE TABLE rankings (
            id          INTEGER PRIMARY KEY,
            created_at  TEXT NOT NULL,              -- ISO 8601, UTC
            session_id  TEXT NOT NULL,
            prompt      TEXT NOT NULL,
            model       TEXT NOT NULL,
            adapter     TEXT,
            params      TEXT NOT NULL DEFAULT '{}',  -- GenerationParams as JSON
            source      TEXT NOT NULL DEFAULT 'rank' -- rank | arena | notebook | import
        );
        CREATE TABLE candidates (
            ranking_id  INTEGER NOT NULL REFERENCES rankings(id) ON DELETE CASCADE,
            position    INTEGER NOT NULL,            -- 0-based, as shown to the user
            text        TEXT NOT NULL,
            rank        INTEGER NOT NULL,            -- 1 = best; equal ranks are a tie
            PRIMARY KEY (ranking_id, position)
        );
        CREATE INDEX rankings_created ON rankings(created_at);
        """,
    ),
    (
        "002_arena_verdict",
        """
        -- The pairwise (arena) mode's verdict: a | b | tie | both_bad; NULL for full rankings.
        ALTER TABLE rankings ADD COLUMN verdict TEXT;
        """,
    ),
    (
        "003_content_hash",
        """
        -- sha256 of the prompt, the (rank, answer) pairs and the verdict (see store.content_hash):
        -- the same ranking submitted again, from any session or process, is stored once.
        -- Rows written before this migration get theirs when a store opens the file (NULLs never collide).
        ALTER TABLE rankings ADD COLUMN content_hash TEXT;
        CREATE UNIQUE INDEX rankings_content_hash ON rankings(content_hash);
        """,
    ),
    (
        "004_cross_model_battles",
        """
        -- A cross-model arena vote: which model wrote answer A (position 0) and which wrote B (position 1),
        -- and whether the rater voted before seeing their names. NULL on rows written before this
        -- migration: their two answers came from the one model in the ``model`` column (see store.battles).
        ALTER TABLE rankings ADD COLUMN model_a TEXT;
        ALTER TABLE rankings ADD COLUMN model_b TEXT;
        ALTER TABLE rankings ADD COLUMN anonymous INTEGER;  -- 1 = names hidden until the vote, 0 = shown
        CREATE INDEX rankings_battles ON rankings(verdict, model_a, model_b);
        """,
    ),
]


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations ``db`` has not seen yet, in one ``BEGIN IMMEDIATE`` transaction; return how many ran."""
    return apply_migrations(db, MIGRATIONS)
