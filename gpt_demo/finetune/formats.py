"""Fine-tuning files as OpenAI defines them, checked with the training validators (``FILE:LINE: problem``).

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "up.jsonl"
    >>> _ = p.write_text('{"prompt": "Hi", "completion": "Hello!"}\\n{"prompt": "Yo"}\\n')
    >>> check_file(p, "mine.jsonl")
    Traceback (most recent call last):
    ...
    gpt_demo.training.data.DataError: mine.jsonl:2: missing field "completion"

Formats (JSON Lines, one example a line):

* ``chat``: ``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}``, the last
  message being the assistant's answer to learn;
* ``prompt_completion``: ``{"prompt": str, "completion": str}`` (the legacy completions format);
* ``preference`` (DPO): OpenAI's ``{"input": {"messages": [...]}, "preferred_output": [assistant message],
  "non_preferred_output": [assistant message]}``, or TRL's ``{"prompt", "chosen", "rejected"}``.

No torch here: only the JSON is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..training.data import DataError, parse_pair_rows, parse_sft_rows
from ..util import scan_jsonl

FORMATS = ("chat", "prompt_completion", "preference")
SFT_FORMATS = ("chat", "prompt_completion")
_OPENAI_PREFERENCE = ("input", "preferred_output", "non_preferred_output")


@dataclass(frozen=True)
class FileCheck:
    """What a valid file holds: its format and how many examples."""

    format: str
    examples: int


def _openai_pair(obj: dict) -> dict:
    """OpenAI's preference row as TRL's ``{"prompt", "chosen", "rejected"}`` (faults are left to the validator)."""
    inp = obj.get("input")
    prompt = inp.get("messages") if isinstance(inp, dict) else inp
    out = {"prompt": prompt if prompt is not None else obj.get("prompt")}
    for ours, theirs in (("chosen", "preferred_output"), ("rejected", "non_preferred_output")):
        if theirs in obj:
            out[ours] = obj[theirs]
    return {k: v for k, v in out.items() if v is not None}


def detect(rows: list[tuple[int, dict]]) -> str:
    """The format the rows are in, decided by the fields of the first example that names one."""
    for _, obj in rows:
        if any(k in obj for k in _OPENAI_PREFERENCE) or "chosen" in obj or "rejected" in obj:
            return "preference"
        if "messages" in obj:
            return "chat"
        if "prompt" in obj or "completion" in obj:
            return "prompt_completion"
    return "prompt_completion"


def normalised_rows(rows: list[tuple[int, dict]], fmt: str) -> list[tuple[int, dict]]:
    if fmt != "preference":
        return rows
    return [(line, _openai_pair(obj) if any(k in obj for k in _OPENAI_PREFERENCE) else obj) for line, obj in rows]


def check_file(path: str | Path, name: str) -> FileCheck:
    """Validate ``path`` (reported as ``name``); DataError lists every ``name:LINE: problem``."""
    rows, faults = scan_jsonl(path)
    problems = [(name, line, message) for line, message in faults]
    if not rows and not problems:
        raise DataError([(name, 0, "the file holds no examples")])
    fmt = detect(rows)
    parse = parse_pair_rows if fmt == "preference" else parse_sft_rows
    parsed: list = []
    try:
        parsed = parse(normalised_rows(rows, fmt), name)
    except DataError as err:
        problems.extend(err.problems)
    if problems:
        problems.sort(key=lambda p: p[1])
        raise DataError(problems)
    return FileCheck(fmt, len(parsed))


def write_training_copy(path: str | Path, fmt: str, target: str | Path) -> Path:
    """``path`` rewritten in the layout the trainers read (TRL's preference rows); SFT files are copied as they are."""
    rows, _ = scan_jsonl(path)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8") as fh:
        for _, obj in normalised_rows(rows, fmt):
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return target
