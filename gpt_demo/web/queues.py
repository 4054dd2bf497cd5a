"""The one concurrency budget that every event using the chat model counts against.

    >>> model_queue(2)
    {'concurrency_id': 'model', 'concurrency_limit': 2}

Gradio gives each event its own queue unless events share a ``concurrency_id``; events
that do share one run at most ``concurrency_limit`` at a time in all (gradio keeps the
lowest limit given in the group, so every member passes the same one). Chat replies, Rank
and Arena generation, the Explain tab (next token, step, attention, strongest heads),
embeddings, Compare and Train all join ``MODEL_QUEUE``, so a burst of look-inside or
training requests waits its turn instead of running beside every chat.
``Limits.concurrency`` (``GPT_DEMO_CONCURRENCY``) and ``ServeConfig.concurrency``
(``--concurrency``) set the limit.
"""

from __future__ import annotations

MODEL_QUEUE = "model"


def model_queue(concurrency: int) -> dict:
    """Keyword arguments for a gradio event that uses the model: its shared queue and limit."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency={concurrency!r} is out of range; allowed: concurrency >= 1")
    return {"concurrency_id": MODEL_QUEUE, "concurrency_limit": concurrency}
