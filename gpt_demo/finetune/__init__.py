"""OpenAI-style files and fine-tuning jobs over the project's trainers, kept in SQLite under ``$GPT_DEMO_HOME``.

    >>> from gpt_demo.finetune import FineTuneStore, check_file       # doctest: +SKIP
    >>> store = FineTuneStore.open(settings)                           # doctest: +SKIP

Modules: ``formats`` (OpenAI's chat, prompt/completion and preference files, checked with
``gpt_demo.training.data``'s validators), ``jobs`` (hyperparameters and ids as OpenAI names them),
``store`` (files, jobs, events and checkpoints; WAL; ``migrations``), ``worker`` (one job at a time
in a background thread; a job a dead server left running is marked failed on restart).
The REST routes are ``gpt_demo.server.files`` and ``gpt_demo.server.finetune``; nothing here imports fastapi.
"""

from .formats import FORMATS, FileCheck, check_file
from .jobs import fine_tuned_model_id, resolve_hyperparameters
from .store import FineTuneStore
from .worker import FineTuneWorker, recover

__all__ = ["FORMATS", "FileCheck", "FineTuneStore", "FineTuneWorker", "check_file", "fine_tuned_model_id",
           "recover", "resolve_hyperparameters"]
