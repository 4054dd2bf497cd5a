"""Typed parsing of magic lines, and ``{name}`` interpolation that leaves other braces alone.

    >>> interpolate('Say {word} as JSON: {"a": {}}', {"word": "hi"})
    'Say hi as JSON: {"a": {}}'
    >>> interpolate("{In[1]} and {missing} and {{word}}", {"In": ["", "x = 1"], "word": "hi"})
    'x = 1 and {missing} and {{word}}'

A magic line is options first, then free text kept exactly as typed (quotes and
apostrophes included): ``%gpt_next --top-k 5 It's a`` gives the text ``It's a``.
``--`` ends the options, for a text that starts with a dash.
"""

from __future__ import annotations

import argparse
import re

from IPython.core.error import UsageError

from ..flags import PARAM_FLAGS as _ALL_FLAGS
from ..flags import add_param_flags as _add_param_flags
from ..flags import param_values as _param_values

# flag: (GenerationParams field, type, help) -- the CLI's own table, so the names cannot drift apart.
PARAM_FLAGS = {flag: _ALL_FLAGS[flag] for flag in (
    "--temperature", "--top-p", "--max-tokens", "--frequency-penalty", "--presence-penalty", "--best-of", "--seed")}

# A notebook name, optionally indexed: {x}, {In[3]}, {Out[-1]}; doubled braces never match.
_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_]\w*)(?:\[(-?\d+)\])?\}(?!\})")
_OPTION = re.compile(r"\s*(-{1,2}[A-Za-z][\w-]*)(=)?")
_VALUE = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'[^']*'|\S+)""")


class MagicParser(argparse.ArgumentParser):
    """argparse whose errors are IPython ``UsageError``s (shown as one line, no traceback)."""

    def __init__(self, prog: str, description: str = "", **kwargs):
        super().__init__(prog=prog, description=description, add_help=False, allow_abbrev=False, **kwargs)
        self.add_argument("-h", "--help", action="store_true", help="show this help")

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status=0, message=None):  # argparse calls this only on errors here
        raise UsageError(f"{self.prog}: {message or 'bad arguments'}".strip())


def add_param_flags(p: argparse.ArgumentParser) -> None:
    _add_param_flags(p, PARAM_FLAGS, system=False, stop_help="stop sequence (repeat up to 4 times; \\n is a newline)")


def param_values(args: argparse.Namespace) -> dict:
    """The generation parameters given on the line, as GenerationParams field values."""
    values = _param_values(args, PARAM_FLAGS)
    if "stop" in values:
        values["stop"] = tuple(s.replace("\\n", "\n").replace("\\t", "\t") for s in values["stop"])
    return values


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        inner = token[1:-1]
        return re.sub(r'\\(["\\])', r"\1", inner) if token[0] == '"' else inner
    return token


def split_options(line: str, parser: argparse.ArgumentParser) -> tuple[list[str], str]:
    """Split ``line`` into option tokens (for ``parser``) and the free text after them, kept verbatim."""
    argv: list[str] = []
    pos = 0
    while True:
        m = _OPTION.match(line, pos)
        if not m:
            break
        flag = m.group(1)
        if flag == "--":
            pos = m.end()
            break
        action = parser._option_string_actions.get(flag)
        if action is None:
            raise UsageError(f"{parser.prog}: unrecognized option {flag} (see {parser.prog} --help)")
        argv.append(flag)
        pos = m.end()
        if action.nargs != 0:
            v = _VALUE.match(line, pos)
            if not v:
                raise UsageError(f"{parser.prog}: option {flag} needs a value")
            argv.append(_unquote(v.group(1)))
            pos = v.end()
    rest = line[pos:]
    return argv, rest[1:] if rest[:1] == " " else rest.lstrip("\n")


def parse(parser: argparse.ArgumentParser, line: str, text_allowed: bool = False) -> tuple[argparse.Namespace, str]:
    """Options of ``line`` parsed by ``parser`` plus the free text; free text is an error unless allowed."""
    argv, rest = split_options(line, parser)
    args = parser.parse_args(argv)
    if rest.strip() and not text_allowed:
        raise UsageError(f"{parser.prog}: unexpected text {rest.strip()!r} on the magic line")
    return args, rest


def interpolate(text: str, namespace: dict) -> str:
    """Replace ``{name}`` / ``{name[i]}`` by notebook values; any other brace stays exactly as written."""

    def value(m: re.Match) -> str:
        name, index = m.group(1), m.group(2)
        if name not in namespace:
            return m.group(0)
        found = namespace[name]
        if index is not None:
            try:
                found = found[int(index)]
            except (IndexError, KeyError, TypeError):
                return m.group(0)
        return found if isinstance(found, str) else str(found)

    return _FIELD.sub(value, text)


def one_line(exc: BaseException) -> str:
    """An exception as one readable line."""
    return " ".join(str(exc).split()) or type(exc).__name__
