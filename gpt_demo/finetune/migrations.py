"""The fine-tuning store's schema as an append-only list of migrations.

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:", isolation_level=None)
    >>> migrate(db)
    1
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
        "001_files_jobs_events_checkpoints",
        """
        CREATE TABLE files (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,   -- list order
            id          TEXT NOT NULL UNIQUE,                -- file-...
            created_at  INTEGER NOT NULL,                    -- Unix seconds
            filename    TEXT NOT NULL,
            bytes       INTEGER NOT NULL,
            purpose     TEXT NOT NULL,
            format      TEXT NOT NULL,                       -- chat | prompt_completion | preference
            examples    INTEGER NOT NULL
        );
        CREATE TABLE jobs (
            seq              INTEGER PRIMARY KEY AUTOINCREMENT,
            id               TEXT NOT NULL UNIQUE,           -- ftjob-...
            created_at       INTEGER NOT NULL,
            status           TEXT NOT NULL,  -- validating_files, queued, running, then succeeded | failed | cancelled
            model            TEXT NOT NULL,
            training_file    TEXT NOT NULL,
            validation_file  TEXT,
            suffix           TEXT,
            seed             INTEGER NOT NULL,
            method           TEXT NOT NULL,                  -- OpenAI's method object, JSON
            hyperparameters  TEXT NOT NULL,                  -- resolved, JSON
            metadata         TEXT,                           -- JSON or NULL
            fine_tuned_model TEXT,
            finished_at      INTEGER,
            error            TEXT,                           -- {"code", "message", "param"} JSON or NULL
            trained_tokens   INTEGER,
            step             INTEGER NOT NULL DEFAULT 0,
            total_steps      INTEGER NOT NULL DEFAULT 0,
            worker_pid       INTEGER                         -- the process that runs it (restart recovery)
        );
        CREATE INDEX jobs_status ON jobs(status);
        CREATE TABLE events (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            id          TEXT NOT NULL UNIQUE,                -- ftevent-...
            job_id      TEXT NOT NULL,
            created_at  INTEGER NOT NULL,
            level       TEXT NOT NULL,                       -- info | warn | error
            type        TEXT NOT NULL,                       -- message | metrics
            message     TEXT NOT NULL,
            data        TEXT                                 -- JSON or NULL
        );
        CREATE INDEX events_job ON events(job_id, seq);
        CREATE TABLE checkpoints (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            id          TEXT NOT NULL UNIQUE,                -- ftckpt-...
            job_id      TEXT NOT NULL,
            created_at  INTEGER NOT NULL,
            step        INTEGER NOT NULL,
            metrics     TEXT NOT NULL,                       -- JSON
            model       TEXT NOT NULL                        -- fine_tuned_model_checkpoint
        );
        CREATE INDEX checkpoints_job ON checkpoints(job_id, seq);
        """,
    ),
]


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations ``db`` has not seen yet, in one ``BEGIN IMMEDIATE`` transaction; return how many ran."""
    return apply_migrations(db, MIGRATIONS)
