"""Every model a picker offers: the base, each saved adapter, each configured remote.

    >>> from gpt_demo.config import Settings
    >>> s = Settings.from_env({"GPT_DEMO_HOME": "/tmp/gd-doc"}, remotes=("big=vllm:http://gpu:8000/v1#Qwen/Q7",))
    >>> [(c.label, c.kind) for c in catalog(s, "smollm2-135m-instruct")]
    [('smollm2-135m-instruct', 'base'), ('big', 'remote')]

A choice's ``label`` is what pickers show and what rankings and votes store, so it is stable:
the base model's name, ``BASE:ADAPTER`` for an adapter (the REST API's id for it too), and a
remote's own id. The list is read again each time it is asked for, so an adapter a training
job just wrote, or a remote an admin just added, shows at once.

Configured remotes come from ``--remote ID=SPEC`` (``Settings.remotes``, ``GPT_DEMO_REMOTES``)
and from ``$GPT_DEMO_HOME/models.toml``::

    [[remote]]
    id = "qwen-7b"
    kind = "vllm"                          # a row of backends.registry.REMOTE_KINDS (default openai)
    url = "http://gpu-box:8000/v1"
    model = "Qwen/Qwen2.5-7B-Instruct"
    key_env = "VLLM_API_KEY"               # optional: the variable holding its key

``add_remote`` (the web app's admin form) appends one, checked first.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .registry import REMOTE_KINDS, parse_spec

MODELS_FILE = "models.toml"
MAX_REMOTES = 64
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_WRITE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelChoice:
    """One entry of a picker: ``kind`` base | adapter | remote; ``spec`` and ``key_env`` for a remote."""

    label: str
    kind: str
    adapter: str | None = None
    spec: str | None = None
    key_env: str | None = None


def check_key_env(key_env: str | None) -> str | None:
    """A key variable a remote may name: ``NAME_KEY``, ``NAME_API_KEY`` or ``NAME_TOKEN``, and never one of
    gpt-demo's own settings or the hub's (their values would be sent to whatever server the entry names)."""
    if key_env in (None, ""):
        return key_env
    if not isinstance(key_env, str) or not _ENV.match(key_env):
        raise ValueError(f"key_env={key_env!r} is not allowed; give the name of an environment variable")
    own = key_env.startswith(("GPT_DEMO_", "HF_", "HUGGING")) and key_env != "GPT_DEMO_REMOTE_KEY"
    if own or not key_env.endswith(("_KEY", "_TOKEN")):
        raise ValueError(f"key_env={key_env!r} is not allowed; name a variable that holds only this server's key, "
                         "ending in _KEY or _TOKEN (not a GPT_DEMO_* or HF_* setting), e.g. VLLM_API_KEY")
    return key_env


def check_remote(rid: str, spec: str, key_env: str | None = None) -> ModelChoice:
    """A remote entry, validated: an id of letters, digits, ``._-``; a spec ``parse_spec`` takes; a key variable."""
    if not isinstance(rid, str) or not _ID.match(rid) or ":" in rid:
        raise ValueError(f"id={rid!r} is not allowed; give 1-64 letters, digits, '.', '_' or '-', starting with "
                         "a letter or digit")
    if not isinstance(spec, str) or any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in spec):
        raise ValueError(f"spec={str(spec)[:100]!r} is not allowed; it has control characters")
    parse_spec(spec)  # raises naming the spec
    key_env = check_key_env(key_env)
    return ModelChoice(rid, "remote", spec=spec, key_env=key_env)


def _from_flag(item: str) -> ModelChoice:
    rid, sep, spec = item.partition("=")
    if not sep:
        raise ValueError(f"remote={item!r} is not allowed; give ID=SCHEME:URL#MODEL, e.g. "
                         "big=vllm:http://gpu:8000/v1#Qwen/Qwen2.5-7B-Instruct")
    return check_remote(rid.strip(), spec.strip())


def models_file(settings) -> Path:
    return Path(settings.home) / MODELS_FILE


def configured_remotes(settings) -> list[ModelChoice]:
    """The remotes of ``--remote`` / ``GPT_DEMO_REMOTES``, then of ``models.toml`` (a bad entry is named)."""
    import tomllib

    out = [_from_flag(item) for item in getattr(settings, "remotes", ()) or ()]
    path = models_file(settings)
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from None
        rows = data.get("remote", [])
        if not isinstance(rows, list):
            raise ValueError(f"{path}: 'remote' must be an array of tables: write each entry as [[remote]]")
        for i, row in enumerate(rows[:MAX_REMOTES]):
            if not isinstance(row, dict):
                raise ValueError(f"{path}: remote[{i}] is not a table")
            kind = row.get("kind", "openai")
            if kind not in REMOTE_KINDS:
                raise ValueError(f"{path}: remote[{i}] kind={kind!r} is not known; choose one of "
                                 f"{', '.join(REMOTE_KINDS)}")
            spec = f"{kind}:{row.get('url', '')}" + (f"#{row['model']}" if row.get("model") else "")
            out.append(check_remote(str(row.get("id", "")), spec, row.get("key_env", None)))
    seen: set[str] = set()
    for choice in out:
        if choice.label in seen:
            raise ValueError(f"remote id {choice.label!r} is given twice; give each remote its own id")
        seen.add(choice.label)
    return out


def catalog(settings, base: str) -> list[ModelChoice]:
    """The base model, its saved adapters (newest first), the configured remotes."""
    from ..models.adapters import CHAT_KINDS, list_adapters
    from .registry import is_remote

    choices = [ModelChoice(base, "base")]
    if not is_remote(base):  # a remote base has its weights on its server: no adapter goes on top of it
        # chat adapters of this base only (a reward model does not chat; another base's adapter does not load)
        choices += [ModelChoice(f"{base}:{a.name}", "adapter", adapter=a.name) for a in list_adapters(settings)
                    if a.kind in CHAT_KINDS and a.base_model in (None, "", base)]
    for remote in configured_remotes(settings):
        if remote.label == base:
            raise ValueError(f"remote id {remote.label!r} is the base model's name; give the remote another id")
        choices.append(remote)
    return choices


def find(settings, base: str, label: str) -> ModelChoice:
    """The choice called ``label``; an unknown one is named with what there is."""
    choices = catalog(settings, base)
    for choice in choices:
        if choice.label == label:
            return choice
    raise ValueError(f"model={label!r} is not one of the models here; choose one of "
                     f"{', '.join(c.label for c in choices)}")


def add_remote(settings, rid: str, spec: str, key_env: str | None = None) -> ModelChoice:
    """Append a remote to ``models.toml`` (written whole to a temporary file, then renamed into place)."""
    choice = check_remote(rid, spec, key_env)
    with _WRITE_LOCK:
        existing = configured_remotes(settings)
        if any(c.label == rid for c in existing):
            raise ValueError(f"id={rid!r} is already a remote; give another id")
        if len(existing) >= MAX_REMOTES:
            raise ValueError(f"there are already {MAX_REMOTES} remotes; remove one from {models_file(settings)}")
        parsed = parse_spec(spec)
        path = models_file(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        rows = [("id", rid), ("kind", parsed.scheme), ("url", parsed.base_url)]
        rows += [("model", parsed.model_id)] if parsed.model_id else []
        rows += [("key_env", key_env or "")]  # "": no key at all, not the kind's default (see key_env_for)
        # JSON strings (no control characters, checked above; non-ASCII kept as is) are TOML basic strings
        import json
        import tomllib

        block = "\n[[remote]]\n" + "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in rows)
        text = old.rstrip("\n") + ("\n" if old.strip() else "") + block
        tomllib.loads(text)  # what is written must read back
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".models.", suffix=".toml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return choice


def key_env_for(settings, spec: str) -> str | None:
    """The ``key_env`` a configured remote with this spec names: a name, "" (send no key), or None (not
    configured: the kind's default variable)."""
    try:
        remotes = configured_remotes(settings)
    except ValueError:
        return None
    return next((c.key_env for c in remotes if c.spec == spec and c.key_env is not None), None)
