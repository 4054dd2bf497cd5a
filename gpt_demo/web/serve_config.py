"""How the web app is served: host, port, auth, sharing, queueing.

    >>> cfg = ServeConfig(host="0.0.0.0")
    >>> cfg.exposed, cfg.warning() is not None
    (True, True)
    >>> ServeConfig(auth="alice:secret").credentials
    ('alice', 'secret')
    >>> ServeConfig(port=70000)
    Traceback (most recent call last):
    ...
    ValueError: port=70000 is out of range; allowed: 0 <= port <= 65535 (0 picks a free port)
"""

from __future__ import annotations

from dataclasses import dataclass, field

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``gpt-demo serve`` takes besides the model."""

    host: str = field(default="127.0.0.1", metadata={"help": "Interface to bind; 0.0.0.0 exposes it to your network."})
    port: int = field(default=7860, metadata={"help": "TCP port (0 picks a free one)."})
    auth: str | None = field(default=None, metadata={"help": "user:password required to open the app."})
    share: bool = field(default=False, metadata={"help": "Open a public gradio.live tunnel (needs internet)."})
    concurrency: int = field(
        default=2, metadata={"help": "Generation requests run at once; the rest wait in the queue."}
    )
    max_queue: int = field(default=64, metadata={"help": "Requests that may wait; more are refused with a message."})

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host={self.host!r} is not allowed; give an interface such as 127.0.0.1 or 0.0.0.0")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port!r} is out of range; allowed: 0 <= port <= 65535 (0 picks a free port)")
        if self.auth is not None:
            user, sep, password = self.auth.partition(":")
            if not sep or not user or not password:
                raise ValueError(f"auth={self.auth!r} is not allowed; give user:password with both parts non-empty")
        for name, lo, hi in (("concurrency", 1, 64), ("max_queue", 1, 10_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name}={value!r} is out of range; allowed: {lo} <= {name} <= {hi}")

    @classmethod
    def from_settings(cls, settings=None, **overrides) -> "ServeConfig":
        """Host, port and auth from ``Settings`` (``$GPT_DEMO_HOST``, ``$GPT_DEMO_PORT``, ``$GPT_DEMO_AUTH``;
        a Space sets ``GRADIO_SERVER_NAME``), then non-None ``overrides`` (CLI flags) win."""
        from ..config import Settings

        settings = settings or Settings.from_env()
        values = {"host": settings.host, "port": settings.port, "auth": settings.auth[0] if settings.auth else None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def exposed(self) -> bool:
        """True when people other than you can reach the app."""
        return self.share or self.host not in LOCAL_HOSTS

    @property
    def credentials(self) -> tuple[str, str] | None:
        if self.auth is None:
            return None
        user, _, password = self.auth.partition(":")
        return user, password

    def warning(self) -> str | None:
        """The warning to print when the app is exposed without a password."""
        if self.exposed and self.auth is None:
            where = "a public gradio.live link" if self.share else f"every machine that can reach {self.host}:{self.port}"
            return (
                f"WARNING: the app is open to {where} with no password: anyone can use the model and "
                "write to your rankings store. Add --auth user:password."
            )
        return None
