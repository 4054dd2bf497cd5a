"""Files and fine-tuning jobs in SQLite under ``$GPT_DEMO_HOME`` (WAL; an append-only migrations list).

    >>> store = FineTuneStore(":memory:", files_dir=None)
    >>> job = store.add_job(model="m", training_file="file-1", validation_file=None, suffix=None, seed=0,
    ...                     method={"type": "supervised"}, hyperparameters={"n_epochs": 1}, total_steps=2)
    >>> store.job(job["id"])["status"]
    'validating_files'
    >>> store.transition(job["id"], "queued", ("validating_files",))
    True
    >>> store.transition(job["id"], "queued", ("validating_files",))    # already moved: no-op
    False

Rows come back as plain dicts in OpenAI's shapes (``fine_tuning.job``, ``file``, ``fine_tuning.job.event``,
``fine_tuning.job.checkpoint``); the uploaded bytes live in ``$GPT_DEMO_HOME/files/ID.jsonl``.
Every write is one statement or one ``BEGIN IMMEDIATE`` transaction, so two processes on one
home never run the same job twice.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from ..sqlite_util import Connections
from .migrations import migrate

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("validating_files", "queued", "running")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def default_path(home) -> Path:
    return Path(home) / "finetune.sqlite"


def _json(value):
    return None if value is None else json.dumps(value, sort_keys=True)


def _load(value):
    return None if value is None else json.loads(value)


class FineTuneStore:
    """Files, jobs, their events and checkpoints. Thread-safe: each thread has its own connection."""

    def __init__(self, path, files_dir: Path | str | None):
        self.path = str(path)
        self.files_dir = Path(files_dir) if files_dir is not None else None
        self._connections = Connections(self.path)
        self._lock = threading.RLock()
        migrate(self._db())

    @classmethod
    def open(cls, settings=None) -> "FineTuneStore":
        from ..config import Settings

        home = Path((settings or Settings.from_env()).home)
        return cls(default_path(home), home / "files")

    def _db(self) -> sqlite3.Connection:
        return self._connections.get()

    def _rows(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._lock:
            db = self._db()
            db.row_factory = sqlite3.Row
            return db.execute(sql, args).fetchall()

    def _write(self, sql: str, args=()) -> int:
        with self._lock:
            return self._db().execute(sql, args).rowcount

    # -- files ------------------------------------------------------------------------
    def file_path(self, file_id: str) -> Path:
        if self.files_dir is None:
            raise ValueError("this store keeps no file contents (files_dir=None)")
        return self.files_dir / f"{file_id}.jsonl"

    def add_file(self, file_id: str, filename: str, size: int, purpose: str, fmt: str, examples: int) -> dict:
        self._write("INSERT INTO files(id, created_at, filename, bytes, purpose, format, examples) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (file_id, now(), filename, size, purpose, fmt, examples))
        return self.file(file_id)

    def file(self, file_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM files WHERE id = ?", (file_id,))
        return _file_object(rows[0]) if rows else None

    def files(self, *, purpose: str | None = None, order: str = "desc", after: str | None = None,
              limit: int = 10_000) -> tuple[list[dict], bool]:
        """(files, has_more) in ``order`` of creation, after the file ``after``."""
        where, args = [], []
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        if after:
            op = "<" if order == "desc" else ">"
            where.append(f"seq {op} COALESCE((SELECT seq FROM files WHERE id = ?), {'1e18' if op == '<' else '-1'})")
            args.append(after)
        sql = ("SELECT * FROM files" + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY seq {'DESC' if order == 'desc' else 'ASC'} LIMIT ?")
        rows = self._rows(sql, (*args, limit + 1))
        return [_file_object(r) for r in rows[:limit]], len(rows) > limit

    def file_format(self, file_id: str) -> tuple[str, int] | None:
        rows = self._rows("SELECT format, examples FROM files WHERE id = ?", (file_id,))
        return (rows[0]["format"], rows[0]["examples"]) if rows else None

    def delete_file(self, file_id: str) -> bool:
        gone = self._write("DELETE FROM files WHERE id = ?", (file_id,)) > 0
        if gone and self.files_dir is not None:
            self.file_path(file_id).unlink(missing_ok=True)
        return gone

    # -- jobs -------------------------------------------------------------------------
    def add_job(self, *, model: str, training_file: str, validation_file: str | None, suffix: str | None, seed: int,
                method: dict, hyperparameters: dict, total_steps: int, metadata: dict | None = None,
                fine_tuned_model: str | None = None, job_id: str | None = None) -> dict:
        job_id = job_id or new_id("ftjob")
        self._write("INSERT INTO jobs(id, created_at, status, model, training_file, validation_file, suffix, seed, "
                    "method, hyperparameters, metadata, total_steps) VALUES (?, ?, 'validating_files', ?, ?, ?, ?, ?, "
                    "?, ?, ?, ?)", (job_id, now(), model, training_file, validation_file, suffix, seed, _json(method),
                                    _json(hyperparameters), _json(metadata), total_steps))
        return self.job(job_id)

    def job(self, job_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job_object(rows[0]) if rows else None

    def job_row(self, job_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return dict(rows[0]) if rows else None

    def jobs(self, *, after: str | None = None, limit: int = 20) -> tuple[list[dict], bool]:
        """(jobs newest first, has_more), after the job ``after``."""
        args: tuple = ()
        where = ""
        if after:
            where = " WHERE seq < COALESCE((SELECT seq FROM jobs WHERE id = ?), 1e18)"
            args = (after,)
        rows = self._rows(f"SELECT * FROM jobs{where} ORDER BY seq DESC LIMIT ?", (*args, limit + 1))
        return [_job_object(r) for r in rows[:limit]], len(rows) > limit

    def jobs_using(self, file_id: str, statuses=ACTIVE) -> list[str]:
        marks = ",".join("?" * len(statuses))
        rows = self._rows(f"SELECT id FROM jobs WHERE (training_file = ? OR validation_file = ?) "
                          f"AND status IN ({marks})", (file_id, file_id, *statuses))
        return [r["id"] for r in rows]

    def transition(self, job_id: str, to: str, from_statuses, **fields) -> bool:
        """Move ``job_id`` to ``to`` if it is in one of ``from_statuses`` (with ``fields`` set); True if it moved."""
        sets = ["status = ?"] + [f"{k} = ?" for k in fields]
        values = [to] + [_json(v) if k == "error" else v for k, v in fields.items()]
        marks = ",".join("?" * len(from_statuses))
        return self._write(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})",
                           (*values, job_id, *from_statuses)) > 0

    def claim_next(self, pid: int) -> dict | None:
        """The oldest queued job, moved to running for process ``pid``; None when none is queued or one runs."""
        with self._lock:
            db = self._db()
            db.row_factory = sqlite3.Row
            db.execute("BEGIN IMMEDIATE")
            try:
                running = db.execute("SELECT id FROM jobs WHERE status = 'running'").fetchone()
                row = None if running else db.execute(
                    "SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
                if row is not None:
                    db.execute("UPDATE jobs SET status = 'running', worker_pid = ? WHERE id = ?", (pid, row["id"]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return self.job_row(row["id"]) if row is not None else None

    def set_step(self, job_id: str, step: int, total: int) -> None:
        self._write("UPDATE jobs SET step = ?, total_steps = ? WHERE id = ?", (step, total, job_id))

    def orphans(self) -> list[dict]:
        """Running jobs whose process is gone (the server died or was restarted meanwhile)."""
        return [dict(r) for r in self._rows("SELECT * FROM jobs WHERE status = 'running'")
                if not _alive(r["worker_pid"])]

    # -- events and checkpoints -------------------------------------------------------------
    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict | None = None) -> None:
        self._write("INSERT INTO events(id, job_id, created_at, level, type, message, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (new_id("ftevent"), job_id, now(), level, type, message, _json(data)))

    def events(self, job_id: str, *, after: str | None = None, limit: int = 20) -> tuple[list[dict], bool]:
        """(events newest first, has_more), as OpenAI lists them."""
        return self._page("events", _event_object, job_id, after, limit)

    def add_checkpoint(self, job_id: str, step: int, metrics: dict, model: str) -> None:
        self._write("INSERT INTO checkpoints(id, job_id, created_at, step, metrics, model) VALUES (?, ?, ?, ?, ?, ?)",
                    (new_id("ftckpt"), job_id, now(), step, _json(metrics), model))

    def checkpoints(self, job_id: str, *, after: str | None = None, limit: int = 10) -> tuple[list[dict], bool]:
        return self._page("checkpoints", _checkpoint_object, job_id, after, limit)

    def _page(self, table: str, to_object, job_id: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
        """A job's rows of ``table`` (events | checkpoints) newest first, after the cursor ``after``; has_more."""
        where, args = "job_id = ?", [job_id]
        if after:
            where += f" AND seq < COALESCE((SELECT seq FROM {table} WHERE id = ?), 1e18)"
            args.append(after)
        rows = self._rows(f"SELECT * FROM {table} WHERE {where} ORDER BY seq DESC LIMIT ?", (*args, limit + 1))
        return [to_object(r) for r in rows[:limit]], len(rows) > limit

def _alive(pid) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    return True


# -- OpenAI's objects ----------------------------------------------------------------------
def _file_object(r) -> dict:
    return {"id": r["id"], "object": "file", "bytes": r["bytes"], "created_at": r["created_at"],
            "filename": r["filename"], "purpose": r["purpose"], "status": "processed", "status_details": None,
            "expires_at": None}


def _job_object(r) -> dict:
    method = _load(r["method"]) or {"type": "supervised"}
    hyper = _load(r["hyperparameters"]) or {}
    kind = method.get("type", "supervised")
    public = {k: v for k, v in hyper.items() if k != "beta"}
    method = {"type": kind, kind: {"hyperparameters": dict(hyper)}}
    running = r["status"] == "running"
    return {
        "id": r["id"], "object": "fine_tuning.job", "created_at": r["created_at"], "error": _load(r["error"]),
        "fine_tuned_model": r["fine_tuned_model"], "finished_at": r["finished_at"],
        "hyperparameters": public, "model": r["model"], "organization_id": "org-gpt-demo", "result_files": [],
        "seed": r["seed"], "status": r["status"], "trained_tokens": r["trained_tokens"],
        "training_file": r["training_file"], "validation_file": r["validation_file"],
        "estimated_finish": None, "integrations": [], "metadata": _load(r["metadata"]), "method": method,
        "user_provided_suffix": r["suffix"],
        # not OpenAI's: how far a running job is
        "step": r["step"] if (running or r["step"]) else None, "total_steps": r["total_steps"],
    }


def _event_object(r) -> dict:
    return {"id": r["id"], "object": "fine_tuning.job.event", "created_at": r["created_at"], "level": r["level"],
            "message": r["message"], "data": _load(r["data"]), "type": r["type"]}


def _checkpoint_object(r) -> dict:
    return {"id": r["id"], "object": "fine_tuning.job.checkpoint", "created_at": r["created_at"],
            "fine_tuned_model_checkpoint": r["model"], "fine_tuning_job_id": r["job_id"],
            "metrics": _load(r["metrics"]), "step_number": r["step"]}
