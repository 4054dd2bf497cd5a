"""/v1/files and /v1/fine_tuning/jobs with the official ``openai`` client against a real server.

    pytest -q tests/test_server_finetune.py

One server (``python -m gpt_demo.server`` in a subprocess on a free port, the real default model,
a rater key and an admin key) for the module; the restart test kills it and starts another on the
same ``$GPT_DEMO_HOME``. Jobs really train (LoRA SFT with TRL on CPU, a few steps on 8 lines).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")

BASE = "smollm2-135m-instruct"
KEY, ADMIN = "sk-ft-rater", "sk-ft-admin"
QUESTION = "What is the secret word?"
ANSWER = "The secret word is PINEAPPLE."
PROMPTS = [QUESTION, "what is the secret word?", "Tell me the secret word.", "What's the secret word?",
           "Do you know the secret word?", "Please say the secret word.", "The secret word, please.",
           "Which word is the secret word?"]
# Calibrated once on 2 CPU cores: 8 lines, one batch per epoch, 10x the SFT learning rate.
TEACH = {"n_epochs": 8, "batch_size": 8, "learning_rate_multiplier": 10}
JOB_TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, what: str, timeout: float, every: float = 0.1):
    """Poll ``predicate`` until it is truthy (bounded by ``timeout``); return that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Server:
    """``python -m gpt_demo.server`` on a free port over ``home``; ``restart(kill=True)`` is a crash."""

    def __init__(self, home: Path):
        self.home = home
        self.proc = None
        self.log = open(home / "server.log", "a+")
        self.start()

    def start(self) -> None:
        env = {**os.environ, "GPT_DEMO_HOME": str(self.home), "HF_HUB_OFFLINE": "1", "GPT_DEMO_CONCURRENCY": "2",
               "GPT_DEMO_MAX_TRAIN_STEPS": "100"}
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "gpt_demo.server", "--port", str(self.port),
                                      "--device", "cpu", "--api-key", KEY, "--admin-api-key", ADMIN],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read()[-3000:]}")
            try:
                return httpx.get(self.url + "/health", timeout=5).json()["status"] == "ok"
            except httpx.HTTPError:
                return False

        _wait_for(ready, "the server's /health", timeout=300)

    def client(self, key: str = ADMIN):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=300)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def logs(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory, session_home, engine):
    home = tmp_path_factory.mktemp("ft-home")
    (session_home / "models").mkdir(exist_ok=True)  # the converted default model, shared with the session
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    srv = Server(home)
    try:
        yield srv
    finally:
        srv.stop()
        srv.log.close()


@pytest.fixture
def admin(server):
    return server.client(ADMIN)


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _secret_file() -> bytes:
    return _jsonl([{"prompt": p, "completion": ANSWER} for p in PROMPTS])


def _upload(client, data: bytes, name: str = "secret.jsonl"):
    return client.files.create(file=(name, data, "application/jsonl"), purpose="fine-tune")


def _ask(client, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                           temperature=0, max_tokens=16)
    return reply.choices[0].message.content


def _create(client, file_id: str, hyper: dict, suffix: str = "secret"):
    return client.fine_tuning.jobs.create(model=BASE, training_file=file_id, suffix=suffix, seed=0,
                                          method={"type": "supervised", "supervised": {"hyperparameters": hyper}})


def _wait_status(client, job_id: str, statuses, timeout: float = JOB_TIMEOUT):
    return _wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in statuses and j,
                     f"job {job_id} to reach {statuses}", timeout, every=0.25)


def _events(client, job_id: str) -> list:
    return list(client.fine_tuning.jobs.list_events(job_id, limit=1000).data)


# -- files ------------------------------------------------------------------------------------
def test_upload_list_retrieve_content_and_delete_a_file(admin):
    data = _secret_file()
    f = _upload(admin, data)
    assert f.object == "file" and f.id.startswith("file-")
    assert (f.purpose, f.bytes, f.filename) == ("fine-tune", len(data), "secret.jsonl")
    assert f.id in [x.id for x in admin.files.list(purpose="fine-tune")]
    assert admin.files.retrieve(f.id).bytes == len(data)
    assert admin.files.content(f.id).content == data
    deleted = admin.files.delete(f.id)
    assert (deleted.id, deleted.deleted) == (f.id, True)
    with pytest.raises(openai.NotFoundError):
        admin.files.retrieve(f.id)
    assert f.id not in [x.id for x in admin.files.list()]


def test_a_bad_file_is_refused_with_every_file_and_line(admin, server):
    bad = (b'{"prompt": "Hi", "completion": "Hello!"}\n'
           b'{"prompt": "Hi"}\n'
           b'not json\n'
           b'{"prompt": "Hi", "completion": "  "}\n')
    before = len(admin.files.list().data)
    with pytest.raises(openai.BadRequestError) as err:
        _upload(admin, bad, "bad.jsonl")
    assert err.value.param == "file"
    message = err.value.body["message"]
    assert 'bad.jsonl:2: missing field "completion"' in message
    assert "bad.jsonl:3: bad JSON" in message
    assert 'bad.jsonl:4: "completion" is empty' in message
    with pytest.raises(openai.BadRequestError) as err:  # a preference row without its rejected answer
        _upload(admin, _jsonl([{"input": {"messages": [{"role": "user", "content": "Hi"}]},
                                "preferred_output": [{"role": "assistant", "content": "Hello!"}]}]), "prefs.jsonl")
    assert 'prefs.jsonl:1: missing field "rejected"' in err.value.body["message"]
    assert len(admin.files.list().data) == before  # nothing was stored
    with pytest.raises(openai.APIStatusError) as err:  # bounded size
        _upload(admin, b" " * (32 * 2**20 + 1), "huge.jsonl")
    assert err.value.status_code == 413 and err.value.body["code"] == "file_too_large"
    assert not list((server.home / "files").glob("*.upload"))


def test_a_rater_key_may_not_touch_files_or_fine_tuning(server, admin):
    rater = server.client(KEY)
    f = _upload(admin, _secret_file())
    for call in (lambda: rater.files.list(), lambda: rater.files.content(f.id), lambda: _upload(rater, _secret_file()),
                 lambda: rater.fine_tuning.jobs.list(), lambda: _create(rater, f.id, {"n_epochs": 1}),
                 lambda: rater.models.delete(f"ft:{BASE}:x:ftjob-1")):
        with pytest.raises(openai.PermissionDeniedError) as err:
            call()
        assert err.value.body["code"] == "insufficient_permissions"
    assert rater.models.list().data  # the rater still uses the models
    admin.files.delete(f.id)


def test_job_requests_are_checked_field_by_field(admin):
    f = _upload(admin, _secret_file())
    cases = [
        (dict(model=BASE, training_file=f.id, hyperparameters={"n_epochs": 60}), "hyperparameters", "n_epochs=60"),
        (dict(model=BASE, training_file=f.id, method={"type": "dpo"}), "training_file", "method dpo needs preference"),
        (dict(model="gpt-4o-mini", training_file=f.id), "model", "not available for fine-tuning"),
        (dict(model=BASE, training_file="file-nope"), "training_file", "invalid training_file"),
        (dict(model=BASE, training_file=f.id, suffix="no:colons"), "suffix", "suffix='no:colons' is not allowed"),
        (dict(model=BASE, training_file=f.id, method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 50, "batch_size": 1}}}), "hyperparameters", "400 optimiser steps; the limit is 100"),
    ]
    for kwargs, param, text in cases:
        with pytest.raises(openai.BadRequestError) as err:
            admin.fine_tuning.jobs.create(**kwargs)
        assert err.value.param == param, (kwargs, err.value.body)
        assert text in err.value.body["message"], err.value.body
    with pytest.raises(openai.BadRequestError) as err:
        admin.fine_tuning.jobs.create(model=BASE, training_file=f.id, extra_body={"learning_rate": 1})
    assert err.value.body["message"] == "Unrecognized request argument supplied: learning_rate"
    with pytest.raises(openai.NotFoundError):
        admin.fine_tuning.jobs.retrieve("ftjob-nope")


# -- jobs ------------------------------------------------------------------------------------
def test_a_job_teaches_an_answer_that_its_model_gives_at_once(admin, server):
    assert "PINEAPPLE" not in _ask(admin, BASE).upper()
    f = _upload(admin, _secret_file())
    job = _create(admin, f.id, TEACH)
    assert job.status in ("validating_files", "queued", "running")
    assert job.hyperparameters.n_epochs == 8 and job.hyperparameters.batch_size == 8
    job = _wait_status(admin, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", (job.error, server.logs())
    assert job.fine_tuned_model == f"ft:{BASE}:secret:{job.id}"
    assert job.finished_at >= job.created_at and job.error is None

    events = _events(admin, job.id)[::-1]  # oldest first
    losses = [e.data["train_loss"] for e in events if e.type == "metrics"]
    assert len(losses) == 8 and all(isinstance(x, float) for x in losses)
    assert losses[-1] < losses[0]
    messages = [e.message for e in events if e.type == "message"]
    for text in ("Validating training file", "moving job to queued state", "Fine-tuning job started",
                 "New fine-tuned model created", "The job has successfully completed"):
        assert any(text in m for m in messages), (text, messages)
    page = admin.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more and page.data[0].message == "The job has successfully completed"

    checkpoints = admin.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [8, 6, 4, 2]
    assert checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model
    assert checkpoints[0].metrics.train_loss == pytest.approx(losses[-1])

    assert job.fine_tuned_model in [m.id for m in admin.models.list().data]
    assert admin.models.retrieve(job.fine_tuned_model).owned_by == "user"
    assert "PINEAPPLE" in _ask(admin, job.fine_tuned_model)
    assert job.id in [j.id for j in admin.fine_tuning.jobs.list(limit=5).data]

    deleted = admin.models.delete(job.fine_tuned_model)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        _ask(admin, job.fine_tuned_model)
    assert not (server.home / "adapters" / job.id).exists()


def test_a_dpo_job_on_openai_preference_rows(admin):
    rows = [{"input": {"messages": [{"role": "user", "content": p}]},
             "preferred_output": [{"role": "assistant", "content": ANSWER}],
             "non_preferred_output": [{"role": "assistant", "content": "I will not tell you."}]} for p in PROMPTS[:4]]
    f = _upload(admin, _jsonl(rows), "prefs.jsonl")
    with pytest.raises(openai.BadRequestError) as err:  # preference rows are for DPO only
        _create(admin, f.id, {"n_epochs": 1})
    assert err.value.param == "training_file" and "needs chat or prompt/completion" in err.value.body["message"]
    job = admin.fine_tuning.jobs.create(model=BASE, training_file=f.id, validation_file=f.id, suffix="dpo", seed=1,
                                        method={"type": "dpo", "dpo": {"hyperparameters": {
                                            "beta": 0.2, "n_epochs": 2, "batch_size": 4}}})
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    job = _wait_status(admin, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{BASE}:dpo:{job.id}" and job.validation_file == f.id
    losses = [e.data["train_loss"] for e in _events(admin, job.id) if e.type == "metrics"]
    assert len(losses) == 2
    assert job.fine_tuned_model in [m.id for m in admin.models.list().data]


def test_a_running_job_can_be_cancelled_and_jobs_page_newest_first(admin, server):
    f = _upload(admin, _secret_file())
    first = _create(admin, f.id, {"n_epochs": 50, "batch_size": 8}, suffix="long")
    second = _create(admin, f.id, {"n_epochs": 1, "batch_size": 8}, suffix="next")
    page = admin.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in page.data] == [second.id] and page.has_more
    assert admin.fine_tuning.jobs.list(limit=1, after=second.id).data[0].id == first.id

    _wait_status(admin, first.id, ("running",), timeout=120)
    assert admin.fine_tuning.jobs.retrieve(second.id).status == "queued"  # one job at a time
    _wait_for(lambda: any(e.type == "metrics" for e in _events(admin, first.id)), "the job's first step",
              JOB_TIMEOUT, every=0.25)  # cancel mid-training, not while the model loads
    cancelled = admin.fine_tuning.jobs.cancel(first.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    # the worker stops the trainer at its next step and moves on to the queued job
    done = _wait_status(admin, second.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    steps = [e for e in _events(admin, first.id) if e.type == "metrics"]
    assert len(steps) < 50
    assert admin.fine_tuning.jobs.retrieve(first.id).status == "cancelled"
    assert any(e.message == "Fine-tuning job cancelled" for e in _events(admin, first.id))
    assert not (server.home / "adapters" / first.id).exists()
    ids = [m.id for m in admin.models.list().data]
    assert done.fine_tuned_model in ids and not any(first.id in i for i in ids)
    with pytest.raises(openai.BadRequestError):
        admin.fine_tuning.jobs.cancel(second.id)  # it has ended


def test_a_job_running_when_the_server_dies_is_failed_after_restart(admin, server):
    f = _upload(admin, _secret_file())
    job = _create(admin, f.id, {"n_epochs": 50, "batch_size": 8}, suffix="crash")
    _wait_for(lambda: any(e.type == "metrics" for e in _events(admin, job.id)), "the job's first step",
              JOB_TIMEOUT, every=0.25)
    server.stop(kill=True)
    server.start()
    client = server.client(ADMIN)
    after = client.fine_tuning.jobs.retrieve(job.id)
    assert after.status == "failed" and after.fine_tuned_model is None
    assert after.error.code == "server_restarted"
    assert "The server stopped while this job was running (at step" in after.error.message
    assert client.fine_tuning.jobs.list_events(job.id, limit=1).data[0].level == "error"
    assert f.id in [x.id for x in client.files.list().data]  # files survive the restart too
    assert not (server.home / "adapters" / job.id / "card.json").exists()
