"""The background worker: runs queued fine-tuning jobs one at a time with the project's own trainers.

    worker = FineTuneWorker(store, settings, base="smollm2-135m-instruct", model=..., device="cpu")
    worker.start()          # marks jobs a dead server left running as failed, then waits for work
    worker.wake()           # a job was queued
    worker.cancel(job_id)   # a running job stops at its next step (the trainer's progress callback raises)

A succeeded job's adapter is ``$GPT_DEMO_HOME/adapters/<job id>``; its card carries
``fine_tuned_model`` (``ft:BASE:SUFFIX:JOBID``), which is how the API finds it by that name.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from .formats import write_training_copy
from .jobs import fine_tuned_model_id, save_every, train_config
from .store import ACTIVE, FineTuneStore, now

log = logging.getLogger(__name__)

RESTART_ERROR = "server_restarted"


class JobCancelled(RuntimeError):
    """Raised from the progress callback when the job was cancelled: the trainer stops at that step."""


def work_dir(settings, job_id: str) -> Path:
    return Path(settings.home) / "finetune" / job_id


def recover(store: FineTuneStore, settings=None) -> list[str]:
    """Mark the jobs a dead process left ``running`` as failed, with an error saying so; return their ids.

    Their half-written adapter directories (checkpoints, no card) are removed when ``settings`` is given.
    """
    from ..models.adapters import adapter_path

    failed = []
    for row in store.orphans():
        message = (f"The server stopped while this job was running (at step {row['step']} of {row['total_steps']}), "
                   "so it did not finish and no model was saved. Create the job again to retrain.")
        if store.transition(row["id"], "failed", ("running",), finished_at=now(),
                            error={"code": RESTART_ERROR, "message": message, "param": None}):
            store.add_event(row["id"], message, level="error")
            failed.append(row["id"])
            if settings is not None:
                shutil.rmtree(adapter_path(row["id"], settings), ignore_errors=True)
                shutil.rmtree(work_dir(settings, row["id"]), ignore_errors=True)
    return failed


class FineTuneWorker:
    """One thread; one job at a time (across processes sharing the home, through the store)."""

    def __init__(self, store: FineTuneStore, settings, *, base: str, model: str, device: str, quantize: str = "none",
                 on_success=None):
        self.store, self.settings = store, settings
        self.base, self.model, self.device, self.quantize = base, model, device, quantize
        self.on_success = on_success  # called with (job id, fine_tuned_model) once the adapter is saved
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: str | None = None

    def start(self) -> "FineTuneWorker":
        recover(self.store, self.settings)
        self._thread = threading.Thread(target=self._loop, name="gpt-demo-finetune", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not ended; a running one stops at its next step. True if it was active."""
        moved = self.store.transition(job_id, "cancelled", ACTIVE, finished_at=now())
        if moved:
            self.store.add_event(job_id, "Fine-tuning job cancelled")
            with self._lock:
                event = self._cancel.get(job_id)
            if event is not None:
                event.set()
        return moved

    # -- the loop ---------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                row = self.store.claim_next(os.getpid())
            except Exception:  # noqa: BLE001 - a locked or broken store: try again later
                log.exception("could not read the fine-tuning queue")
                row = None
            if row is None:
                self._wake.wait(timeout=2.0)  # also picks up jobs another process queued
                self._wake.clear()
                continue
            try:
                self._run(row)
            except Exception:  # noqa: BLE001 - the worker must survive any one job
                log.exception("fine-tuning job %s crashed the worker", row["id"])

    def _run(self, row: dict) -> None:
        import json

        from .. import api
        from ..models.adapters import adapter_path, read_card, write_card
        from ..training.data import DataError

        job_id = row["id"]
        method = json.loads(row["method"])
        hyper = json.loads(row["hyperparameters"])
        kind = method.get("type", "supervised")
        cancel = threading.Event()
        with self._lock:
            self._cancel[job_id] = cancel
            self.current = job_id
        if (self.store.job(job_id) or {}).get("status") != "running":  # cancelled between claim and here
            cancel.set()
        steps = row["total_steps"]
        every = save_every(steps)
        ft_model = fine_tuned_model_id(self.base, row["suffix"], job_id)
        last: dict = {}
        self.store.add_event(job_id, "Fine-tuning job started")

        def on_progress(step, total, metrics):
            if cancel.is_set():
                raise JobCancelled(f"cancelled at step {step}")
            total = total or steps
            loss = metrics.get("loss")
            if loss is None:  # the trainer's other logs (evaluation) are not training steps
                return
            data = {"step": int(step), "total_steps": int(total), "train_loss": float(loss)}
            for key in ("mean_token_accuracy", "rewards/accuracies", "rewards/margins"):
                if key in metrics:
                    data["train_" + key.replace("/", "_")] = float(metrics[key])
            if "num_tokens" in metrics:
                last["num_tokens"] = int(metrics["num_tokens"])
            self.store.set_step(job_id, int(step), int(total))
            self.store.add_event(job_id, f"Step {step}/{total}: training loss={float(loss):.4f}", type="metrics",
                                 data=data)
            if step % every == 0 or step == total:  # the trainer saved a checkpoint here
                self.store.add_checkpoint(job_id, int(step), {"step": float(step), "train_loss": float(loss)},
                                          ft_model if step == total else f"{ft_model}:ckpt-step-{step}")

        data_path = self.store.file_path(row["training_file"])
        ended = None
        try:
            fmt = (self.store.file_format(row["training_file"]) or ("prompt_completion", 0))[0]
            if not data_path.is_file():
                raise DataError([(row["training_file"], 0, "the file's contents are gone from the server")])
            if kind == "dpo":
                data_path = write_training_copy(data_path, fmt, work_dir(self.settings, job_id) / "train.jsonl")
            config = train_config(kind, hyper, steps=steps, seed=row["seed"], model=self.model, device=self.device,
                                  quantize=self.quantize)
            train = api.train_dpo if kind == "dpo" else api.train_sft
            result = train(str(data_path), job_id, settings=self.settings, on_progress=on_progress, **config)
            card = read_card(result.path)
            card.update({"fine_tuned_model": ft_model, "fine_tuning_job": job_id,
                         "training_file": row["training_file"]})
            write_card(result.path, card)
            tokens = last.get("num_tokens")
            if self.store.transition(job_id, "succeeded", ("running",), fine_tuned_model=ft_model,
                                     finished_at=now(), trained_tokens=tokens):
                self.store.add_event(job_id, f"New fine-tuned model created: {ft_model}")
                self.store.add_event(job_id, "The job has successfully completed")
                ended = "succeeded"
                if self.on_success is not None:
                    self.on_success(job_id, ft_model)
            else:  # cancelled after the last step: nothing is kept
                ended = "cancelled"
        except JobCancelled:
            ended = "cancelled"
            self.store.transition(job_id, "cancelled", ("running",), finished_at=now())
        except Exception as exc:  # noqa: BLE001 - the job fails, the server stays up
            ended = "failed"
            param = "training_file" if isinstance(exc, DataError) else None
            code = "invalid_training_file" if param else "training_failed"
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (ValueError, DataError)) else str(exc)
            if self.store.transition(job_id, "failed", ("running",), finished_at=now(),
                                     error={"code": code, "message": message, "param": param}):
                self.store.add_event(job_id, f"Fine-tuning job failed: {message}", level="error")
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)
                self.current = None
            shutil.rmtree(work_dir(self.settings, job_id), ignore_errors=True)
            if ended != "succeeded":
                shutil.rmtree(adapter_path(job_id, self.settings), ignore_errors=True)
