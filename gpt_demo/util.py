"""Small helpers every layer shares (no torch, no third-party imports): file hashes and JSON Lines.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = p.write_text('{"a": 1}\\n\\n[2]\\n{"b": \\n')
    >>> rows, problems = scan_jsonl(p)
    >>> rows
    [(1, {'a': 1})]
    >>> problems
    [(3, 'expected a JSON object, got list'), (4, 'bad JSON (Expecting value at column 1)')]
    >>> read_jsonl(p)
    Traceback (most recent call last):
    ...
    ValueError: .../rows.jsonl:3: expected a JSON object, got list

``scan_jsonl`` collects every fault (the training data checks report them all together);
``read_jsonl`` is the strict reader for files the project ships or writes itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def scan_jsonl(path: str | Path) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """((line number, object) for each good non-blank line, (line number, problem) for each bad one)."""
    rows: list[tuple[int, dict]] = []
    problems: list[tuple[int, str]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append((number, f"bad JSON ({exc.msg} at column {exc.colno})"))
                continue
            if not isinstance(obj, dict):
                problems.append((number, f"expected a JSON object, got {type(obj).__name__}"))
                continue
            rows.append((number, obj))
    return rows, problems


def read_jsonl(path: str | Path) -> list[dict]:
    """Every object of a JSON Lines file (blank lines skipped); ValueError ``FILE:LINE: problem`` on the first fault."""
    rows, problems = scan_jsonl(path)
    if problems:
        line, message = problems[0]
        raise ValueError(f"{path}:{line}: {message}")
    return [obj for _, obj in rows]


@contextmanager
def replacing(path: str | Path):
    """Write to a temporary file beside ``path``; it becomes ``path`` in one step when the block succeeds.

        >>> import tempfile; d = Path(tempfile.mkdtemp())
        >>> with replacing(d / "a.json") as tmp:
        ...     _ = tmp.write_text("{}")
        >>> (d / "a.json").read_text(), sorted(p.name for p in d.iterdir())
        ('{}', ['a.json'])

    A reader (or a process killed mid-write) never sees half a file; the temporary name does not
    end like ``path``, so a glob for ``*.npz`` or ``*.json`` does not find it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
