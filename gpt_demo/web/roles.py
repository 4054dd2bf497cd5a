"""Who may do what in the web app: raters chat, rank and vote; admins also export, train, manage adapters
and see paths. The decision is pure (no gradio); ``gradio_fn`` wraps a handler so the check runs on the
server, inside the event, for the page's buttons and the API endpoints alike.

    >>> access = Access(raters=("ann",), admins=("root",), exposed=True)
    >>> access.role("ann"), access.role("root"), access.role(None)
    ('rater', 'admin', None)
    >>> access.allowed("ann", "export"), access.allowed("root", "export")
    (False, True)
    >>> Access(exposed=False).role(None)   # no logins on your own machine: one person, everything open
    'admin'
    >>> Access(exposed=True).role(None)    # exposed with no logins: anyone chats, ranks and votes; no more
    'rater'
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

RATER_ACTIONS = ("chat", "rank", "vote")
ADMIN_ACTIONS = ("export", "train", "adapters", "paths", "models")
ACTIONS = RATER_ACTIONS + ADMIN_ACTIONS
ACTION_LABELS = {
    "chat": "Chat", "rank": "Ranking", "vote": "Voting",
    "export": "Export", "train": "Training", "adapters": "Deleting adapters", "paths": "Showing paths",
    "models": "Adding remote models",
}
ENABLE_HINT = "start the app with --admin user:password (or set GPT_DEMO_ADMIN=user:password) and log in as that user"


@dataclass(frozen=True)
class Access:
    """The logins the app was started with, by role, and whether people other than you can reach it."""

    raters: tuple[str, ...] = ()  # user names given by --auth / GPT_DEMO_AUTH
    admins: tuple[str, ...] = ()  # user names given by --admin / GPT_DEMO_ADMIN
    exposed: bool = False  # a non-loopback host, or --share

    @classmethod
    def from_serve(cls, serve) -> "Access":
        """The roles a ``ServeConfig`` sets up (its logins' user names; passwords stay with gradio)."""
        return cls(raters=tuple(u for u, _ in serve.rater_logins), admins=tuple(u for u, _ in serve.admin_logins),
                   exposed=serve.exposed)

    @property
    def logins(self) -> bool:
        return bool(self.raters or self.admins)

    def role(self, user: str | None) -> str | None:
        """'admin', 'rater', or None (not logged in while logins are required)."""
        if not self.logins:
            return "rater" if self.exposed else "admin"
        if user in self.admins:
            return "admin"
        if user in self.raters:
            return "rater"
        return None

    def allowed(self, user: str | None, action: str) -> bool:
        if action not in ACTIONS:
            raise ValueError(f"action={action!r} is not allowed; choose one of {', '.join(ACTIONS)}")
        role = self.role(user)
        return role == "admin" or (role == "rater" and action in RATER_ACTIONS)

    @property
    def admin_possible(self) -> bool:
        """False when nobody can be an admin: Export and Train are off for everyone."""
        return bool(self.admins) or not self.logins and not self.exposed

    def refusal(self, user: str | None, action: str) -> str:
        """Why ``user`` may not do ``action``, and how to enable it."""
        what = ACTION_LABELS[action]
        if self.role(user) is None:
            return f"{what} needs a login; log in first."
        if not self.admin_possible:
            why = "this app is exposed to other machines" if self.exposed else "this app has rater logins only"
            return f"{what} is turned off: {why} and has no admin. To enable it, {ENABLE_HINT}."
        return (f"{what} needs an admin login; user={user!r} is a rater (raters chat, rank and vote). "
                "Log in as an admin.")

    def check(self, user: str | None, action: str) -> None:
        """Raise PermissionError with ``refusal`` unless ``user`` may do ``action``."""
        if not self.allowed(user, action):
            raise PermissionError(self.refusal(user, action))

    def locked_note(self) -> str | None:
        """What the page says when Export and Train are off for everyone (None when someone can use them)."""
        if self.admin_possible:
            return None
        why = "this app is exposed to other machines" if self.exposed else "this app has rater logins only"
        return (f"Export and Train are turned off: {why} and has no admin. To enable them, "
                f"start the app with `--admin user:password` (or set `GPT_DEMO_ADMIN`) and log in as that user.")


class AccessHolder:
    """The app's current ``Access``: set by ``build_app``, replaced by ``launch`` with the config it serves."""

    def __init__(self, access: Access):
        self.access = access


def request_user(request) -> str | None:
    """The logged-in user name of a ``gr.Request`` (None without auth, or for a call with no request)."""
    return getattr(request, "username", None) if request is not None else None


def gradio_fn(fn, holder: AccessHolder, action: str | None = None, *, pass_user: bool = False):
    """``fn`` as a gradio event function that receives the ``gr.Request``.

    With ``action``, the request's user must be allowed it, or the event fails with the refusal
    (``gr.Error``) before ``fn`` runs. With ``pass_user``, ``fn`` gets ``(access, user, *inputs)``.
    The wrapper keeps ``fn``'s parameters (API names, a ``gr.Progress`` default) after a first,
    positional ``request`` parameter that gradio fills in.
    """
    import gradio as gr

    def gate(request):
        access, user = holder.access, request_user(request)
        if action is not None and not access.allowed(user, action):
            raise gr.Error(access.refusal(user, action), print_exception=False)
        return (access, user) if pass_user else ()

    if inspect.isgeneratorfunction(fn):
        def wrapper(request, *args, **kwargs):
            yield from fn(*gate(request), *args, **kwargs)
    else:
        def wrapper(request, *args, **kwargs):
            return fn(*gate(request), *args, **kwargs)

    params = list(inspect.signature(fn).parameters.values())[2 if pass_user else 0:]
    first = inspect.Parameter("request", inspect.Parameter.POSITIONAL_ONLY)
    wrapper.__signature__ = inspect.Signature([first, *params])
    wrapper.__annotations__ = {"request": gr.Request}  # a class, not a string: gradio resolves it to inject
    wrapper.__name__ = getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", "handler"))
    return wrapper
