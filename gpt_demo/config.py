"""The one place that reads environment variables.

    >>> from gpt_demo.config import Settings
    >>> s = Settings.from_env({"GPT_DEMO_HOME": "/tmp/gd", "GPT_DEMO_QUANTIZE": "4bit"})
    >>> s.quantize, str(s.models_dir)
    ('4bit', '/tmp/gd/models')

Every other module takes a ``Settings`` (or the values in it) as an argument, so
tests point ``GPT_DEMO_HOME`` at a temporary directory and nothing leaks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from .limits import Limits

DEFAULT_MODEL = "smollm2-135m-instruct"
QUANTIZE_CHOICES = ("none", "8bit", "4bit")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
DECODE_CHOICES = ("auto", "int4", "bf16", "float")
# How the moderation classifier runs MiniLM's layers (gpt_demo.moderation.lean; ModerationConfig.forward).
MODERATION_FORWARDS = ("lean", "int8", "transformers")


# OpenMP (libgomp, PyTorch's CPU thread pool) gives each thread that runs torch ops its own team of
# workers, and once there are more of them than cores it stops its workers spinning between two
# parallel regions: every one of the ~150 kernels of a decode step then waits for sleeping workers
# to wake. The scheduler decodes in its own thread, so beside the main thread's team that halved
# decode speed (52 vs 104 tokens/s here, in one run). Spinning for a bounded while (about a
# millisecond, then sleeping) keeps the working team fast and lets an idle one yield its core.
THREAD_RUNTIME_DEFAULTS = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"}


def set_thread_runtime_defaults(env=None) -> None:
    """Put ``THREAD_RUNTIME_DEFAULTS`` into the environment unless already set (before torch is imported)."""
    env = os.environ if env is None else env
    for key, value in THREAD_RUNTIME_DEFAULTS.items():
        env.setdefault(key, value)


def read_secret(name: str, env=None) -> str | None:
    """The value of environment variable ``name`` (a remote server's key), or None when unset.

    Keys come only from the environment, named by a flag (``--api-key-env NAME``), never from a
    flag's value, which would show in ``ps`` and shell history.
    """
    if not isinstance(name, str) or not name.strip() or "=" in name:
        raise ValueError(f"api_key_env={name!r} is not allowed; give the name of an environment variable")
    env = os.environ if env is None else env
    return env.get(name) or None


def check_choice(field_name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError naming all three."""
    if value not in allowed:
        raise ValueError(f"{field_name}={value!r} is not allowed; choose one of {', '.join(allowed)}")
    return value


def _default_home() -> Path:
    return Path("~/.cache/gpt-demo").expanduser()


@dataclass(frozen=True)
class Settings:
    """Machine-wide settings, from the environment (``GPT_DEMO_*``) or CLI flags."""

    home: Path = field(
        default_factory=_default_home,
        metadata={"help": "Data directory: model caches, adapters, the rankings store (GPT_DEMO_HOME)."},
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Registry name, hub id, local directory or .gguf path (GPT_DEMO_MODEL)."},
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda (GPT_DEMO_DEVICE)."})
    quantize: str = field(default="none", metadata={"help": "none | 8bit | 4bit (GPT_DEMO_QUANTIZE)."})
    decode: str = field(
        default="auto",
        metadata={"help": "How generation runs on the CPU (GPT_DEMO_DECODE): auto (4-bit lean path where it "
                          "serves the model, else float32) | int4 | bf16 (lean path with those weights) | float "
                          "(the transformers model in float32)."},
    )
    native_step: bool = field(
        default=True,
        metadata={"help": "Compile the lean path's decode step with the C++ compiler, once per machine, in the "
                          "background (GPT_DEMO_NATIVE_STEP=0: stay in Python)."},
    )
    batching: bool = field(
        default=True,
        metadata={"help": "Batch every generation request of a lean-path model into one running batch "
                          "(GPT_DEMO_BATCHING=0: one decode loop per request, as before the scheduler)."},
    )
    host: str = field(
        default="127.0.0.1",
        metadata={"help": "Web app interface (GPT_DEMO_HOST, else GRADIO_SERVER_NAME as Spaces set it)."},
    )
    port: int = field(default=7860, metadata={"help": "Web app port (GPT_DEMO_PORT, else GRADIO_SERVER_PORT)."})
    auth: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Raters' user:password logins, comma-separated in GPT_DEMO_AUTH: chat, rank, vote."},
    )
    admin: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Admins' user:password logins (GPT_DEMO_ADMIN): also export, train, manage adapters."},
    )
    api_keys: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Keys for the REST API (Authorization: Bearer KEY), comma-separated in GPT_DEMO_API_KEYS."},
    )
    admin_api_keys: tuple[str, ...] = field(
        default=(),
        metadata={"help": "REST API keys that may also delete models (GPT_DEMO_ADMIN_API_KEYS)."},
    )
    limits: Limits = field(
        default_factory=Limits,
        metadata={"help": "Per-request bounds and the concurrency budget (GPT_DEMO_MAX_*, see gpt_demo.limits)."},
    )
    moderation_forward: str = field(
        default="lean",
        metadata={"help": "How the moderation classifier runs MiniLM (GPT_DEMO_MODERATION_FORWARD): lean (transformers' "
                          "numbers) | int8 (8-bit matrix products: 2-3x faster, close scores, model gpt-demo-moderation-7-int8) | transformers."},
    )
    remotes: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Remote models the pickers offer, as ID=SCHEME:URL#MODEL, comma-separated in "
                          "GPT_DEMO_REMOTES (also $GPT_DEMO_HOME/models.toml; see gpt_demo.backends.catalog)."},
    )
    offline: bool = field(
        default=False,
        metadata={"help": "Never contact the hub (GPT_DEMO_OFFLINE=1 or HF_HUB_OFFLINE=1)."},
    )

    def __post_init__(self) -> None:
        check_choice("device", self.device, DEVICE_CHOICES)
        check_choice("quantize", self.quantize, QUANTIZE_CHOICES)
        check_choice("decode", self.decode, DECODE_CHOICES)
        check_choice("moderation_forward", self.moderation_forward, MODERATION_FORWARDS)
        if not self.model:
            raise ValueError("model='' is not allowed; give a registry name, hub id or path")
        for name in ("auth", "admin", "api_keys", "admin_api_keys", "remotes"):
            value = getattr(self, name)
            if isinstance(value, str):  # one login given as a plain string
                object.__setattr__(self, name, (value,) if value else ())
            elif value is None:
                object.__setattr__(self, name, ())
            else:
                object.__setattr__(self, name, tuple(value))

    @property
    def models_dir(self) -> Path:
        return Path(self.home) / "models"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``); non-None ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict = {}
        if env.get("GPT_DEMO_HOME"):
            values["home"] = Path(env["GPT_DEMO_HOME"]).expanduser()
        for name in ("model", "device", "quantize", "decode", "moderation_forward"):
            key = f"GPT_DEMO_{name.upper()}"
            if env.get(key):
                values[name] = env[key]
        host = env.get("GPT_DEMO_HOST") or env.get("GRADIO_SERVER_NAME")
        if host:
            values["host"] = host
        port = env.get("GPT_DEMO_PORT") or env.get("GRADIO_SERVER_PORT")
        if port:
            try:
                values["port"] = int(port)
            except ValueError:
                raise ValueError(f"GPT_DEMO_PORT={port!r} is not allowed; give a port number") from None
        for name in ("auth", "admin", "api_keys", "admin_api_keys", "remotes"):
            raw = env.get(f"GPT_DEMO_{name.upper()}")
            if raw:
                values[name] = tuple(item.strip() for item in raw.split(",") if item.strip())
        values["limits"] = Limits.from_env(env)
        truthy = ("1", "true", "yes", "on")
        if env.get("GPT_DEMO_BATCHING"):
            values["batching"] = env["GPT_DEMO_BATCHING"].lower() in truthy
        if env.get("GPT_DEMO_NATIVE_STEP"):
            values["native_step"] = env["GPT_DEMO_NATIVE_STEP"].lower() in truthy
        values["offline"] = (
            env.get("GPT_DEMO_OFFLINE", "").lower() in truthy or env.get("HF_HUB_OFFLINE", "").lower() in truthy
        )
        known = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise TypeError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
            if value is not None:
                values[key] = Path(value) if key == "home" else value
        return cls(**values)
