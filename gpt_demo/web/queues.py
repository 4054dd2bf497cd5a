"""The two concurrency budgets that every event using the chat model counts against.

    >>> generate_queue(8)
    {'concurrency_id': 'generate', 'concurrency_limit': 8}
    >>> model_queue(2)
    {'concurrency_id': 'model', 'concurrency_limit': 2}

Gradio gives each event its own queue unless events share a ``concurrency_id``; events
that do share one run at most ``concurrency_limit`` at a time in all (gradio keeps the
lowest limit given in the group, so every member passes the same one).

- ``GENERATE_QUEUE``: Chat replies, Rank and Arena answers. They join the model's one running
  batch (``generation.scheduler``), so as many run at once as the batch has rows:
  ``Limits.concurrency`` (``GPT_DEMO_CONCURRENCY``, ``--concurrency``).
- ``MODEL_QUEUE``: everything else that runs the model and does not batch: the Explain tab
  (next token, step, attention, strongest heads), embeddings, Compare and Train. A burst of
  them waits its turn instead of running beside every chat on two cores:
  ``Limits.jobs`` (``GPT_DEMO_JOBS``, ``--jobs``).
"""

from __future__ import annotations

GENERATE_QUEUE = "generate"
MODEL_QUEUE = "model"


def _queue(name: str, field_name: str, limit: int) -> dict:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{field_name}={limit!r} is out of range; allowed: {field_name} >= 1")
    return {"concurrency_id": name, "concurrency_limit": limit}


def generate_queue(concurrency: int) -> dict:
    """Keyword arguments for a gradio event that generates: the batch's queue and its size."""
    return _queue(GENERATE_QUEUE, "concurrency", concurrency)


def model_queue(jobs: int) -> dict:
    """Keyword arguments for any other gradio event that uses the model: its shared queue and limit."""
    return _queue(MODEL_QUEUE, "jobs", jobs)
