"""Moderation in OpenAI's shape: the classifier (``classifier``), its training (``train``, ``config``).

    >>> from gpt_demo.moderation import moderate
    >>> moderate("I want to kill him").categories["violence"]
    True

``classifier`` is what the chat gate, the web tab, the notebook and the CLI use; ``train`` and
``config`` rebuild the shipped head (``gpt-demo moderation train``). Names are resolved
lazily, so importing the package (or ``config``) loads no numpy; MiniLM loads on the first call.
"""

_CLASSIFIER_NAMES = (
    "CATEGORIES", "CODES", "DATA_DIR", "GATE_MODES", "GATE_ROLES", "HEAD_PATH", "THRESHOLDS_PATH",
    "GateDecision", "Head", "ModerationConfig", "ModerationResult", "Moderator", "check_thresholds",
    "chunks", "describe_thresholds", "embed", "gate", "get_moderator", "load_thresholds", "moderate",
    "moderation_response",
)
__all__ = list(_CLASSIFIER_NAMES)


def __getattr__(name: str):
    # Lazy, so `gpt-demo moderation train --help` (which reads .config) imports no numpy.
    if name in _CLASSIFIER_NAMES:
        from . import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'gpt_demo.moderation' has no attribute {name!r}")
