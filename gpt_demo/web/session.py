"""Per-browser-session state, kept in ``gr.State`` so each visitor has their own history.

    >>> s = WebSession()
    >>> s.conversation.add("user", "Hi").messages
    [{'role': 'user', 'content': 'Hi'}]
    >>> len(s.id)
    32
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ..chat import Conversation


@dataclass
class WebSession:
    """What one visitor's tabs remember between events."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    conversation: Conversation = field(default_factory=Conversation)
    note: str = ""  # the last truncation or moderation note shown under the chat
    rank_prompt: str = ""  # the prompt the current candidates answer
    rank_answers: tuple[str, ...] = ()  # the answers as generated (edited ones are not "generated")
    rank_params: dict = field(default_factory=dict)
    last_stored: tuple | None = None  # (prompt, answers, ranks) of the last ranking stored: no double submits
    arena: tuple[str, str] | None = None  # the two answers on show in the arena
    arena_prompt: str = ""
    arena_params: dict = field(default_factory=dict)
    reply_id: int = 0  # bumped by each new reply; an older stream that sees it change stops writing
    explain_text: str = ""  # the text the Explain tab is stepping through
    models: dict = field(default_factory=dict)  # tab -> the model label its picker chose (web/pickers.py)
    arena_models: tuple[str, str] | None = None  # who wrote answers A and B; hidden until the vote
    arena_anonymous: bool = False
    arena_source: tuple | None = None  # (model, adapter) of a samples battle, as the store records them
    rank_source: tuple | None = None  # (model, adapter) that wrote the candidates on show
    probs: dict = field(default_factory=dict)  # view ("chat", "rank-0", ...) -> web.probs.AnswerProbs on show


def ensure(session: WebSession | None) -> WebSession:
    """gradio_client sessions can start without the load event; give them a fresh state."""
    return session if isinstance(session, WebSession) else WebSession()


def new_session() -> WebSession:
    """``gr.State``'s factory (gradio calls it at page load; a dataclass type itself confuses its config)."""
    return WebSession()
