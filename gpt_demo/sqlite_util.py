"""SQLite as the stores use it: a WAL connection per thread and an append-only migrations list.

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:", isolation_level=None)
    >>> apply_migrations(db, [("001_notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);")])
    1
    >>> apply_migrations(db, [("001_notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);")])
    0

The rankings store (``feedback/``) and the fine-tuning store (``finetune/``) each keep their own
list of migrations; this module is the one runner and the one way to open their files.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Sequence


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements (comments dropped; migrations hold no quoted semicolons)."""
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [stmt.strip() for stmt in code.split(";") if stmt.strip()]


def apply_migrations(db: sqlite3.Connection, migrations: Sequence[tuple[str, str]]) -> int:
    """Apply the ``(name, sql)`` migrations ``db`` has not seen yet, in one transaction; return how many ran.

    ``db`` must be in autocommit mode (``isolation_level=None``). ``BEGIN IMMEDIATE`` takes the
    write lock before reading what ran, so two processes opening a new file at once cannot both
    apply the same migration. The ``_migrations`` table records which ones ran.
    """
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    db.execute("BEGIN IMMEDIATE")
    try:
        done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        ran = 0
        for name, sql in migrations:
            if name in done:
                continue
            for stmt in split_statements(sql):
                db.execute(stmt)
            db.execute("INSERT INTO _migrations(name, applied_at) VALUES (?, ?)",
                       (name, datetime.now(timezone.utc).isoformat()))
            ran += 1
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return ran


def open_file(path, *, foreign_keys: bool = False) -> sqlite3.Connection:
    """An autocommit connection to the file at ``path`` in WAL mode (one per thread: sqlite3's rule)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; safe with WAL
    if foreign_keys:
        db.execute("PRAGMA foreign_keys=ON")
    return db


class Connections:
    """One connection per thread to ``path`` (sqlite3's rule), or one shared one for ``":memory:"``.

        >>> c = Connections(":memory:")
        >>> c.get() is c.get()
        True
    """

    def __init__(self, path, *, foreign_keys: bool = False):
        import threading
        from pathlib import Path

        self.path = str(path)
        self.foreign_keys = foreign_keys
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._memory: sqlite3.Connection | None = None  # ":memory:" is one database only through one connection

    def get(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            if self._memory is None:
                self._memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                if self.foreign_keys:
                    self._memory.execute("PRAGMA foreign_keys=ON")
            return self._memory
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_file(self.path, foreign_keys=self.foreign_keys)
        return db

    def close(self) -> None:
        """Close this thread's connection (the next ``get`` opens a new one)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
