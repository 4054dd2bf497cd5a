"""Training data: read, validate (file + line number), and normalise to TRL's conversational formats.

    >>> rows = parse_sft_rows([(1, {"prompt": "Hi", "completion": "Hello!"})], "demo.jsonl")
    >>> rows[0]["prompt"], rows[0]["completion"]
    ([{'role': 'user', 'content': 'Hi'}], [{'role': 'assistant', 'content': 'Hello!'}])
    >>> parse_sft_rows([(3, {"prompt": "Hi", "completion": " "})], "demo.jsonl")
    Traceback (most recent call last):
    ...
    gpt_demo.training.data.DataError: demo.jsonl:3: "completion" is empty

Accepted files (JSON Lines, one object per line):

* SFT: ``{"prompt": str, "completion": str}`` (OpenAI's fine-tuning format), ``{"messages": [...]}``
  (the last message is the answer), or TRL's conversational ``{"prompt": [...], "completion": [...]}``.
* Preferences: ``{"prompt", "chosen", "rejected"}`` (strings or message lists), or hh-rlhf transcripts
  ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``; or the word ``store`` for
  the rankings store (each ranking of k answers gives k(k-1)/2 pairs).
* Prompts (PPO): ``{"prompt": str | [...]}`` or ``{"messages": [...]}`` per line, or a ``.txt`` file, one per line.

Every problem in a file is collected and reported together; nothing trains on a half-valid file.
Rows longer than ``--max-length`` tokens are not faults: ``fit_lengths`` truncates them (or skips
them with ``--drop-long``) and reports how many, as TRL and LLaMA-Factory do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..util import file_sha256, scan_jsonl

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
STORE_WORDS = ("store", "rankings")
MAX_REPORTED = 10
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


class DataError(ValueError):
    """A data file is not usable; ``problems`` holds (file, line, message) for each fault found."""

    def __init__(self, problems: list[tuple[str, int, str]]):
        self.problems = problems
        shown = [f"{f}:{line}: {msg}" for f, line, msg in problems[:MAX_REPORTED]]
        more = len(problems) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more problem(s)" if more else "")
        if len(problems) > 1:
            text = f"{len(problems)} problems, nothing was trained:\n" + text
        super().__init__(text)

    @property
    def line(self) -> int:
        return self.problems[0][1]


class _Problems:
    def __init__(self, name: str):
        self.name, self.items = name, []

    def add(self, line: int, message: str) -> None:
        self.items.append((self.name, line, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise DataError(self.items)


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; DataError naming every bad line."""
    rows, problems = _read_jsonl(path)
    problems.raise_if_any()
    return rows


def _parse_file(path: str | Path, parse) -> list[dict]:
    """Read ``path`` and ``parse`` its rows; JSON faults and field faults are reported together, by line."""
    rows, problems = _read_jsonl(path)
    try:
        parsed = parse(rows, str(path))
    except DataError as err:
        problems.items.extend(err.problems)
    problems.items.sort(key=lambda p: p[1])
    problems.raise_if_any()
    return parsed


def _read_jsonl(path: str | Path) -> tuple[list[tuple[int, dict]], "_Problems"]:
    path = Path(path)
    if not path.is_file():
        raise DataError([(str(path), 0, "no such file")])
    rows, faults = scan_jsonl(path)
    problems = _Problems(str(path))
    for line, message in faults:
        problems.add(line, message)
    if not rows and not problems.items:
        raise DataError([(str(path), 0, "the file holds no examples")])
    return rows, problems


# -- field checks (each returns an error string or None) ---------------------------------
def _text_problem(obj: dict, key: str) -> str | None:
    if key not in obj:
        return f'missing field "{key}"'
    value = obj[key]
    if not isinstance(value, str):
        return f'"{key}" must be a string or a list of messages, got {type(value).__name__}'
    if not value.strip():
        return f'"{key}" is empty'
    return None


def _messages_problem(messages, key: str) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f'"{key}" must be a non-empty list of messages'
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f'"{key}"[{i}] must be an object with "role" and "content"'
        if m["role"] not in ROLES:
            return f'"{key}"[{i}] has role {m["role"]!r}; allowed: {", ".join(ROLES)}'
        if not isinstance(m["content"], str) or not m["content"].strip():
            return f'"{key}"[{i}] ({m["role"]}) has empty content'
    return None


def _as_messages(value, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _field(obj: dict, key: str, role: str) -> tuple[list[dict] | None, str | None]:
    """``obj[key]`` as messages (a string becomes one ``role`` message), or an error."""
    value = obj.get(key)
    error = _messages_problem(value, key) if isinstance(value, list) else _text_problem(obj, key)
    return (None, error) if error else (_as_messages(value, role), None)


# -- SFT --------------------------------------------------------------------------------
def parse_sft_rows(rows: Iterable[tuple[int, dict]], name: str) -> list[dict]:
    """Normalise to ``{"prompt": [messages], "completion": [assistant message], "line": n}``."""
    problems, out = _Problems(name), []
    for line, obj in rows:
        if "messages" in obj:
            msgs = obj["messages"]
            error = _messages_problem(msgs, "messages")
            if error is None and msgs[-1]["role"] != "assistant":
                error = '"messages" must end with an assistant message (the answer to learn)'
            if error is None and not any(m["role"] == "user" for m in msgs[:-1]):
                error = '"messages" needs a user message before the answer'
            if error:
                problems.add(line, error)
                continue
            out.append({"prompt": _as_messages(msgs[:-1], "user"), "completion": _as_messages(msgs[-1:], "assistant"),
                        "line": line})
            continue
        if "prompt" not in obj and "completion" not in obj:
            problems.add(line, 'expected "prompt" and "completion", or "messages"')
            continue
        prompt, error = _field(obj, "prompt", "user")
        completion, error2 = _field(obj, "completion", "assistant")
        error = error or error2
        if error is None and completion[-1]["role"] != "assistant":
            error = '"completion" must be an assistant message'
        if error:
            problems.add(line, error)
            continue
        out.append({"prompt": prompt, "completion": completion, "line": line})
    problems.raise_if_any()
    return out


def load_sft(path: str | Path) -> list[dict]:
    """Read and validate an SFT file; see the module docstring for the formats."""
    return _parse_file(path, parse_sft_rows)


# -- preference pairs -----------------------------------------------------------------------
def _hh_turns(text: str) -> list[dict] | None:
    """hh-rlhf transcript -> messages, or None when ``text`` is not one."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        return None
    return [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
            for who, body in zip(parts[1::2], parts[2::2])]


def parse_pair_rows(rows: Iterable[tuple[int, dict]], name: str) -> list[dict]:
    """Normalise to ``{"prompt": [messages], "chosen": [msg], "rejected": [msg], "line": n}``."""
    problems, out = _Problems(name), []
    for line, obj in rows:
        if "prompt" not in obj and isinstance(obj.get("chosen"), str) and isinstance(obj.get("rejected"), str):
            chosen, rejected = _hh_turns(obj["chosen"]), _hh_turns(obj["rejected"])
            if chosen is None or rejected is None:
                problems.add(line, 'no "prompt": expected hh-rlhf transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...")')
                continue
            if chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
                problems.add(line, "chosen and rejected transcripts must share every turn but the last assistant one")
                continue
            if not chosen[-1]["content"] or not rejected[-1]["content"]:
                problems.add(line, "an answer is empty")
                continue
            out.append({"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:], "line": line})
            continue
        fields, error = {}, None
        for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
            fields[key], error = _field(obj, key, role)
            if error:
                break
        if error is None and fields["chosen"] == fields["rejected"]:
            error = '"chosen" and "rejected" are the same answer'
        if error:
            problems.add(line, error)
            continue
        out.append({**fields, "line": line})
    problems.raise_if_any()
    return out


def load_pairs(source: str | Path, settings=None) -> tuple[list[dict], str]:
    """Pairs from a JSONL file or the rankings store (``source="store"``); returns (pairs, fingerprint)."""
    if str(source) in STORE_WORDS:
        from ..feedback import FeedbackStore

        store = FeedbackStore.open(settings)
        raw = store.pairs()
        if not raw:
            raise DataError([(store.path, 0, "the rankings store holds no preference pairs yet; rank some answers first")])
        pairs = parse_pair_rows(enumerate(raw, start=1), store.path)
        digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
        return pairs, f"store:{digest}"
    return _parse_file(source, parse_pair_rows), file_sha256(source)


# -- PPO prompts --------------------------------------------------------------------------
def load_prompts(path: str | Path) -> list[list[dict]]:
    """Prompts as message lists (ending with a user message)."""
    path = Path(path)
    if path.suffix == ".txt":
        if not path.is_file():
            raise DataError([(str(path), 0, "no such file")])
        lines = [(i, ln.strip()) for i, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if ln.strip()]
        if not lines:
            raise DataError([(str(path), 0, "the file holds no prompts")])
        return [[{"role": "user", "content": text}] for _, text in lines]
    return _parse_file(path, _parse_prompt_rows)


def _parse_prompt_rows(rows, name: str) -> list[list[dict]]:
    problems, out = _Problems(name), []
    for line, obj in rows:
        key = "messages" if "messages" in obj else "prompt"
        msgs, error = _field(obj, key, "user")
        if error is None and msgs[-1]["role"] != "user":
            error = f'"{key}" must end with a user message (the model answers it)'
        if error:
            problems.add(line, error)
        else:
            out.append(msgs)
    problems.raise_if_any()
    return out


# -- lengths ------------------------------------------------------------------------------
@dataclass
class LengthReport:
    """What ``fit_lengths`` did to rows longer than ``max_length`` tokens (chat template included)."""

    name: str
    max_length: int
    rows: int = 0  # rows looked at
    truncated: list[int] = field(default_factory=list)  # their line numbers
    dropped: list[int] = field(default_factory=list)  # --drop-long, or too long even when truncated

    def metrics(self) -> dict:
        return {"long_rows_truncated": len(self.truncated), "long_rows_dropped": len(self.dropped)}

    def message(self) -> str | None:
        """One sentence for the user, or None when every row fit."""
        if not self.truncated and not self.dropped:
            return None
        parts = []
        if self.truncated:
            parts.append(f"{len(self.truncated)} truncated (the prompt keeps its end, the answer its start; "
                         f"--drop-long skips them instead), lines {_lines(self.truncated)}")
        if self.dropped:
            parts.append(f"{len(self.dropped)} skipped, lines {_lines(self.dropped)}")
        long_rows = len(self.truncated) + len(self.dropped)
        return (f"{self.name}: {long_rows} of {self.rows} rows are longer than max_length={self.max_length} "
                f"tokens: " + "; ".join(parts))


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:MAX_REPORTED]))
    return shown + (f" and {len(lines) - MAX_REPORTED} more" if len(lines) > MAX_REPORTED else "")


def _n_tokens(tokenizer, messages: list[dict], generation_prompt: bool = False) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                             return_dict=True)["input_ids"])


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """(prompt budget, answer budget) for a row of ``source_len`` + ``target_len`` tokens (LLaMA-Factory's rule).

    A short answer is kept whole and the prompt gives way; a short prompt is kept whole and the
    answer gives way; when both are long they share ``cutoff_len`` in proportion.

    >>> infer_seqlen(500, 40, 320), infer_seqlen(100, 500, 320), infer_seqlen(300, 300, 320)
    ((280, 40), (100, 220), (160, 160))
    """
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target = min(max_target, target_len)
    return min(max(cutoff_len - new_target, 0), source_len), new_target


def _keep_tokens(tokenizer, text: str, n: int, end: bool) -> str:
    """``text`` cut to its first (``end=False``) or last ``n`` tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= n:
        return text
    kept = ids[len(ids) - n:] if end else ids[:n]
    return tokenizer.decode(kept, skip_special_tokens=False).strip() or tokenizer.decode(kept)


def _clip_prompt(tokenizer, prompt: list[dict], budget: int) -> list[dict] | None:
    """``prompt`` within ``budget`` tokens: the oldest turns go first, then the start of the oldest kept one."""
    system = [m for m in prompt[:1] if m["role"] == "system"]
    turns = prompt[len(system):]
    while len(turns) > 1 and _n_tokens(tokenizer, system + turns, True) > budget:
        turns = turns[1:]
        while len(turns) > 1 and turns[0]["role"] != "user":  # start with the user, as a conversation does
            turns = turns[1:]
    over = _n_tokens(tokenizer, system + turns, True) - budget
    if over > 0 and system:  # a long system prompt gives way before the question does
        keep = len(tokenizer(system[0]["content"], add_special_tokens=False)["input_ids"]) - over
        system = [] if keep < 1 else [{**system[0], "content": _keep_tokens(tokenizer, system[0]["content"], keep, True)}]
        over = _n_tokens(tokenizer, system + turns, True) - budget
    if over > 0:
        first = turns[0]
        keep = len(tokenizer(first["content"], add_special_tokens=False)["input_ids"]) - over
        if keep < 1:
            return None
        turns = [{**first, "content": _keep_tokens(tokenizer, first["content"], keep, True)}] + turns[1:]
    return system + turns


def _truncate(tokenizer, row: dict, answer_keys, max_length: int) -> dict | None:
    """``row`` cut so prompt + each answer fits ``max_length`` tokens, or None when it cannot."""
    prompt = row["prompt"]
    for _attempt in range(4):  # decode/encode round trips can differ by a token or two: measure again
        n_prompt = _n_tokens(tokenizer, prompt, True)
        n_answers = {k: _n_tokens(tokenizer, prompt + row[k]) - n_prompt for k in answer_keys}
        longest = max(n_answers.values())
        if n_prompt + longest <= max_length:
            return row
        p_budget, a_budget = infer_seqlen(n_prompt, longest, max_length)
        frame = _n_tokens(tokenizer, [{"role": "user", "content": "x"}], True)  # template tokens of any prompt
        if p_budget < frame:
            p_budget, a_budget = frame, max_length - frame
        clipped = _clip_prompt(tokenizer, prompt, p_budget) if n_prompt > p_budget else prompt
        if clipped is None:
            return None
        new = {**row, "prompt": clipped}
        for key, n in n_answers.items():
            if n <= a_budget:
                continue
            answer = row[key][-1]
            content_len = len(tokenizer(answer["content"], add_special_tokens=False)["input_ids"])
            keep = a_budget - (n - content_len)  # the template's end-of-turn tokens stay
            if keep < 1:
                return None
            new[key] = row[key][:-1] + [{**answer, "content": _keep_tokens(tokenizer, answer["content"], keep, False)}]
        row, prompt = new, clipped
    fits = all(_n_tokens(tokenizer, row["prompt"] + row[k]) <= max_length for k in answer_keys)
    return row if fits else None


def fit_lengths(rows: list[dict], tokenizer, max_length: int, name: str, answer_keys=("completion",),
                drop: bool = False) -> tuple[list[dict], LengthReport]:
    """Rows whose prompt + answer (chat template included) fit ``max_length`` tokens, and what was done.

    Longer rows are truncated, as TRL and LLaMA-Factory do: the answer keeps its start, the prompt
    its end (the oldest turns go first), shared out by ``infer_seqlen``. ``drop=True`` skips them
    instead. A row that cannot fit even truncated is skipped; if no row is left, DataError.
    """
    report = LengthReport(name=name, max_length=max_length, rows=len(rows))
    kept = []
    for row in rows:
        n = max(_n_tokens(tokenizer, row["prompt"] + row[k]) for k in answer_keys)
        if n <= max_length:
            kept.append(row)
            continue
        fitted = None if drop else _truncate(tokenizer, row, answer_keys, max_length)
        if fitted is None:
            report.dropped.append(row["line"])
        else:
            report.truncated.append(row["line"])
            kept.append(fitted)
    if rows and not kept:
        raise DataError([(name, 0, f"every row is longer than max_length={max_length} tokens"
                                   f"{' (--drop-long)' if drop else ' even truncated'}; raise --max-length")])
    if report.message():
        log.warning(report.message())
    return kept, report


# -- splits -------------------------------------------------------------------------------------
def conversation_key(row: dict) -> str:
    """What groups rows of one conversation: its first user message (an oasst1 message tree's root prompt)."""
    first = next((m for m in row["prompt"] if m["role"] == "user"), row["prompt"][0])
    return first["content"].strip()


def split_by_conversation(rows: list[dict], eval_fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Hold out ``eval_fraction`` of the conversations; every row of one conversation stays on one side.

    Rows of one conversation share most of their text (every later turn repeats the first ones),
    so splitting by the whole prompt would leak held-out text into training. For oasst1 the first
    user message is the message tree's root, so this is the split by ``message_tree_id`` that
    ``../shared/data/preferences/README.md`` asks for.
    """
    if eval_fraction <= 0:
        return list(rows), []
    keys = sorted({conversation_key(r) for r in rows})
    random.Random(seed).shuffle(keys)
    n_eval = max(1, round(len(keys) * eval_fraction)) if len(keys) > 1 else 0
    held = set(keys[:n_eval])
    train = [r for r in rows if conversation_key(r) not in held]
    test = [r for r in rows if conversation_key(r) in held]
    return train, test


def without_line(rows: list[dict]) -> list[dict]:
    """Rows ready for ``datasets.Dataset.from_list`` (the line number is ours, not TRL's)."""
    return [{k: v for k, v in r.items() if k != "line"} for r in rows]
