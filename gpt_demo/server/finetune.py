"""``/v1/fine_tuning/jobs``: create, list (``after``, ``limit``), retrieve, cancel, events and checkpoints.

    client.fine_tuning.jobs.create(training_file=f.id, model="smollm2-135m-instruct", suffix="secret",
                                   method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}})

Status runs ``validating_files`` -> ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``.
Jobs run one at a time in ``gpt_demo.finetune.FineTuneWorker`` (a background thread over
``gpt_demo.api.train_sft`` / ``train_dpo``); a job's ``fine_tuned_model`` (``ft:BASE:SUFFIX:JOBID``)
answers chat completions as soon as the job has succeeded. Admin key needed when admin keys are set.
"""

from __future__ import annotations

import asyncio
import random

from fastapi import Request  # module level: FastAPI resolves the string annotations against these globals

from .errors import APIError, bad_request
from .fields import Fields, check_fields, get_int, require
from .files import _query_int

JOB_FIELDS = Fields(
    served=frozenset({"model", "training_file", "validation_file", "suffix", "seed", "hyperparameters", "method",
                      "metadata"}),
    unsupported=frozenset({"integrations"}),
)


class FineTuning:
    """The store and the worker of one API app (``state.extra["finetune"]``)."""

    def __init__(self, store, worker):
        self.store, self.worker = store, worker


def install(state) -> FineTuning:
    """Open the store under ``$GPT_DEMO_HOME``, mark jobs a dead server left running as failed, start the worker."""
    from ..config import QUANTIZE_CHOICES
    from ..engine_cache import key_of
    from ..finetune import FineTuneStore, FineTuneWorker

    store = FineTuneStore.open(state.settings)
    key = key_of(state.engine)
    device = "cuda" if str(key.device).startswith("cuda") else "cpu"
    quantize = key.quantize if key.quantize in QUANTIZE_CHOICES else "none"
    worker = FineTuneWorker(store, state.settings, base=state.base, model=key.model, device=device,
                            quantize=quantize).start()
    state.extra["finetune"] = service = FineTuning(store, worker)
    return service


def job_not_found(job_id: str) -> APIError:
    return APIError(404, f"Could not find fine-tuning job: {job_id}", param="fine_tuning_job_id",
                    code="fine_tuning_job_not_found")


def _method(body: dict) -> tuple[str, dict]:
    """(method type, its hyperparameters); the deprecated top-level ``hyperparameters`` count for supervised."""
    method = body.get("method")
    top = body.get("hyperparameters")
    if top is not None and not isinstance(top, dict):
        raise bad_request(f"hyperparameters={top!r} is not allowed; give an object", "hyperparameters")
    if method is None:
        return "supervised", dict(top or {})
    if not isinstance(method, dict):
        raise bad_request(f"method={method!r} is not allowed; give {{'type': 'supervised' | 'dpo', ...}}", "method")
    kind = method.get("type")
    if kind not in ("supervised", "dpo"):
        raise bad_request(f"method.type={kind!r} is not supported; choose supervised or dpo", "method")
    unknown = [k for k in method if k not in ("type", kind)]
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: method.{unknown[0]}", param="method")
    inner = method.get(kind) or {}
    if not isinstance(inner, dict) or any(k != "hyperparameters" for k in inner):
        raise bad_request(f"method.{kind}={inner!r} is not allowed; give {{'hyperparameters': {{...}}}}", "method")
    hyper = inner.get("hyperparameters") or {}
    if not isinstance(hyper, dict):
        raise bad_request(f"method.{kind}.hyperparameters={hyper!r} is not allowed; give an object", "method")
    return kind, {**(top or {}), **hyper}


def _metadata(body: dict):
    meta = body.get("metadata")
    if meta is None:
        return None
    if (not isinstance(meta, dict) or len(meta) > 16
            or any(not isinstance(k, str) or len(k) > 64 or not isinstance(v, str) or len(v) > 512
                   for k, v in meta.items())):
        raise bad_request("metadata is not allowed; give up to 16 string keys (64 characters) and string values "
                          "(512 characters)", "metadata")
    return meta


def _create(svc: FineTuning, state, body: dict) -> dict:
    from ..finetune.jobs import check_suffix, resolve_hyperparameters

    store = svc.store
    model = require(body, "model", "model")
    if model != state.base:
        raise bad_request(f"model={model!r} is not available for fine-tuning; fine-tune {state.base!r}", "model",
                          "model_not_available")
    kind, hyper = _method(body)
    files = {}
    for name in ("training_file", "validation_file"):
        file_id = body.get(name)
        if file_id is None and name == "validation_file":
            continue
        if not isinstance(file_id, str) or store.file_format(file_id) is None:
            raise bad_request(f"invalid {name}: {file_id!r} is not an uploaded file (see GET /v1/files)", name)
        fmt, examples = store.file_format(file_id)
        wanted = "preference" if kind == "dpo" else "chat or prompt/completion"
        if (fmt == "preference") != (kind == "dpo"):
            raise bad_request(f"{name} {file_id} is in {fmt.replace('_', '/')} format; method {kind} needs {wanted} "
                              "examples", name, "invalid_file_format")
        files[name] = (file_id, fmt, examples)
    suffix = check_suffix(body.get("suffix"))
    seed = get_int(body, "seed", 0, 2**31 - 1)
    seed = random.randrange(2**31 - 1) if seed is None else seed
    metadata = _metadata(body)
    examples = files["training_file"][2]
    hyper, steps = resolve_hyperparameters(kind, hyper, examples=examples, max_steps=state.limits.max_train_steps)
    job = store.add_job(model=model, training_file=files["training_file"][0],
                        validation_file=files.get("validation_file", (None,))[0], suffix=suffix, seed=seed,
                        method={"type": kind}, hyperparameters=hyper, total_steps=steps, metadata=metadata)
    job_id = job["id"]
    store.add_event(job_id, f"Created fine-tuning job: {job_id}")
    store.add_event(job_id, f"Validating training file: {files['training_file'][0]}"
                    + (f" and validation file: {files['validation_file'][0]}" if "validation_file" in files else ""))
    # Both files were checked line by line on upload; what is left is that they still exist.
    if store.transition(job_id, "queued", ("validating_files",)):
        store.add_event(job_id, f"Files validated, moving job to queued state ({steps} steps)")
    svc.worker.wake()
    return store.job(job_id)


def add_routes(router, state, *, admin, read_json) -> None:
    """Add the fine-tuning routes to ``router``; ``admin`` checks for an admin key."""

    def svc() -> FineTuning:
        return state.extra["finetune"]

    async def existing(job_id: str) -> dict:
        job = await asyncio.to_thread(svc().store.job, job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    @router.post("/fine_tuning/jobs", dependencies=[admin])
    async def create_job(request: Request):
        body = await read_json(request)
        check_fields(body, JOB_FIELDS, "fine-tuning")
        return await asyncio.to_thread(_create, svc(), state, body)

    @router.get("/fine_tuning/jobs", dependencies=[admin])
    async def list_jobs(request: Request):
        limit = _query_int(request, "limit", 1, 100, 20)
        rows, more = await asyncio.to_thread(svc().store.jobs, after=request.query_params.get("after"), limit=limit)
        return {"object": "list", "data": rows, "has_more": more}

    @router.get("/fine_tuning/jobs/{job_id}", dependencies=[admin])
    async def get_job(job_id: str):
        return await existing(job_id)

    @router.post("/fine_tuning/jobs/{job_id}/cancel", dependencies=[admin])
    async def cancel_job(job_id: str):
        job = await existing(job_id)
        if not await asyncio.to_thread(svc().worker.cancel, job_id):
            raise bad_request(f"Job {job_id} has already {job['status']}; only a job that has not ended can be "
                              "cancelled", "fine_tuning_job_id")
        return await existing(job_id)

    @router.get("/fine_tuning/jobs/{job_id}/events", dependencies=[admin])
    async def job_events(job_id: str, request: Request):
        await existing(job_id)
        limit = _query_int(request, "limit", 1, 1000, 20)
        rows, more = await asyncio.to_thread(svc().store.events, job_id, after=request.query_params.get("after"),
                                             limit=limit)
        return {"object": "list", "data": rows, "has_more": more}

    @router.get("/fine_tuning/jobs/{job_id}/checkpoints", dependencies=[admin])
    async def job_checkpoints(job_id: str, request: Request):
        await existing(job_id)
        limit = _query_int(request, "limit", 1, 100, 10)
        rows, more = await asyncio.to_thread(svc().store.checkpoints, job_id, after=request.query_params.get("after"),
                                             limit=limit)
        return {"object": "list", "data": rows, "has_more": more,
                "first_id": rows[0]["id"] if rows else None, "last_id": rows[-1]["id"] if rows else None}
