"""How the web app is served: host, port, logins by role, sharing, queueing.

    >>> cfg = ServeConfig(host="0.0.0.0")
    >>> cfg.exposed, cfg.warning() is not None
    (True, True)
    >>> ServeConfig(auth="alice:secret", admin=["root:toor"]).credentials
    [('alice', 'secret'), ('root', 'toor')]
    >>> ServeConfig(port=70000)
    Traceback (most recent call last):
    ...
    ValueError: port=70000 is out of range; allowed: 0 <= port <= 65535 (0 picks a free port)
"""

from __future__ import annotations

from dataclasses import dataclass, field

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1); 0.0.0.0 means every interface."""
    import ipaddress

    if host.strip().lower() in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: assume others can reach it
        return False


def _logins(name: str, value) -> tuple[str, ...]:
    """``value`` (None, one "user:password" or several) as a tuple; a malformed one is named."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        user, sep, password = item.partition(":") if isinstance(item, str) else ("", "", "")
        if not sep or not user.strip() or not password:
            raise ValueError(f"{name}={item!r} is not allowed; give user:password with both parts non-empty")
    return items


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``gpt-demo serve`` takes besides the model."""

    host: str = field(default="127.0.0.1", metadata={"help": "Interface to bind; 0.0.0.0 exposes it to your network."})
    port: int = field(default=7860, metadata={"help": "TCP port (0 picks a free one)."})
    auth: tuple[str, ...] = field(
        default=(), metadata={"help": "Raters' user:password logins (chat, rank, vote); repeatable."}
    )
    admin: tuple[str, ...] = field(
        default=(), metadata={"help": "Admins' user:password logins: also export, train, manage adapters, see paths."}
    )
    share: bool = field(default=False, metadata={"help": "Open a public gradio.live tunnel (needs internet)."})
    concurrency: int = field(
        default=8, metadata={"help": "Generations run at once (Chat, Rank, Arena): they share the model's one "
                                     "batch, so this is also its size (default: GPT_DEMO_CONCURRENCY)."}
    )
    jobs: int = field(
        default=2, metadata={"help": "Other model jobs run at once: Explain, embeddings, moderation, Compare, "
                                     "Train (default: GPT_DEMO_JOBS)."}
    )
    max_queue: int = field(default=64, metadata={"help": "Requests that may wait; more are refused with a message."})
    api: bool = field(default=True, metadata={"help": "Also serve the OpenAI-compatible REST API at /v1 on the same port."})
    api_keys: tuple[str, ...] = field(
        default=(), metadata={"help": "Bearer keys the REST API requires (none: open; GPT_DEMO_API_KEYS)."}
    )
    admin_api_keys: tuple[str, ...] = field(
        default=(), metadata={"help": "Bearer keys that may also delete models over the API (GPT_DEMO_ADMIN_API_KEYS)."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host={self.host!r} is not allowed; give an interface such as 127.0.0.1 or 0.0.0.0")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port!r} is out of range; allowed: 0 <= port <= 65535 (0 picks a free port)")
        object.__setattr__(self, "auth", _logins("auth", self.auth))
        object.__setattr__(self, "admin", _logins("admin", self.admin))
        for name in ("api_keys", "admin_api_keys"):
            value = getattr(self, name)
            items = (value,) if isinstance(value, str) else tuple(value or ())
            for key in items:
                if not isinstance(key, str) or not key.strip() or any(c.isspace() for c in key):
                    raise ValueError(f"{name}={key!r} is not allowed; give a non-empty key without spaces")
            object.__setattr__(self, name, items)
        seen: dict[str, str] = {}
        for name in ("auth", "admin"):  # one password and one role per user name
            for item in getattr(self, name):
                user = item.partition(":")[0].strip()
                if user in seen:
                    raise ValueError(f"{name}={item!r} is not allowed; user {user!r} is already given by "
                                     f"{seen[user]}: give each user one login")
                seen[user] = f"--{name}"
        for name, lo, hi in (("concurrency", 1, 64), ("jobs", 1, 64), ("max_queue", 1, 10_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name}={value!r} is out of range; allowed: {lo} <= {name} <= {hi}")

    @classmethod
    def from_settings(cls, settings=None, **overrides) -> "ServeConfig":
        """Host, port and logins from ``Settings`` (``$GPT_DEMO_HOST``, ``$GPT_DEMO_PORT``, ``$GPT_DEMO_AUTH``,
        ``$GPT_DEMO_ADMIN``; a Space sets ``GRADIO_SERVER_NAME``), then non-None ``overrides`` (CLI flags) win."""
        from ..config import Settings

        settings = settings or Settings.from_env()
        values = {"host": settings.host, "port": settings.port, "auth": settings.auth, "admin": settings.admin,
                  "concurrency": settings.limits.concurrency, "jobs": settings.limits.jobs, "api_keys": settings.api_keys,
                  "admin_api_keys": settings.admin_api_keys}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def exposed(self) -> bool:
        """True when people other than you can reach the app: --share, or a host that is not loopback."""
        return self.share or not is_loopback(self.host)

    @staticmethod
    def _pairs(items) -> list[tuple[str, str]]:
        return [(user.strip(), password) for user, _, password in (i.partition(":") for i in items)]

    @property
    def rater_logins(self) -> list[tuple[str, str]]:
        return self._pairs(self.auth)

    @property
    def admin_logins(self) -> list[tuple[str, str]]:
        return self._pairs(self.admin)

    @property
    def credentials(self) -> list[tuple[str, str]] | None:
        """gradio's ``auth``: every rater's and admin's (user, password), or None (no login page)."""
        return (self.rater_logins + self.admin_logins) or None

    def warning(self) -> str | None:
        """The warning to print when the app is exposed without a password."""
        if self.exposed and not self.auth and not self.admin:
            where = "a public gradio.live link" if self.share else f"every machine that can reach {self.host}:{self.port}"
            return (
                f"WARNING: the app is open to {where} with no password: anyone can use the model and "
                "write to your rankings store. Add --auth user:password for raters, and --admin user:password "
                "to turn on Export and Train for admins."
            )
        return None
