"""``create_api(engine)``: the FastAPI app of OpenAI's routes over one engine.

    api = create_api(engine, api_keys=["sk-local"])          # routes under /v1, standalone
    uvicorn.run(api, port=8000)                               # (what ``python -m gpt_demo.server`` does)

    root = FastAPI()                                          # beside the web app, on one port:
    root.mount("/v1", create_api(engine, prefix=""))          # its own error handlers come along
    root = gr.mount_gradio_app(root, blocks, path="/")

Routes: GET /v1/models, GET /v1/models/{id}, DELETE /v1/models/{id} (adapters; admin),
POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/moderations, and GET /health
(running and waiting jobs, and the base model's batch: sequences decoding, requests waiting, steps;
at the app's root, so /v1/health when mounted at /v1).
Files and fine-tuning jobs (admin): /v1/files, /v1/fine_tuning/jobs (``files``, ``finetune``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass, field

from fastapi import Request  # at module level: FastAPI resolves the string annotations against these globals

from .errors import APIError, bad_request, install_handlers
from .fields import (CHAT_FIELDS, COMPLETION_FIELDS, EMBEDDING_FIELDS, MODERATION_FIELDS, chat_messages,
                     check_fields, get_int, require, text_inputs)
from .gate import JobGate

DEFAULT_MAX_QUEUE = 64


@dataclass
class APIState:
    """What every route needs; kept on ``app.state.gpt_demo``."""

    engine: object
    settings: object
    cache: object
    gate: JobGate  # generations: as many at once as the model's batch has rows
    jobs: JobGate | None = None  # embeddings and moderation, which do not batch (Limits.jobs)
    api_keys: frozenset = frozenset()
    admin_api_keys: frozenset = frozenset()
    exposed: bool = False
    max_body_bytes: int = 0
    created: int = 0
    base: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def limits(self):
        return self.settings.limits


def _keys(name: str, values) -> frozenset:
    items = (values,) if isinstance(values, str) else tuple(values or ())
    for k in items:
        if not isinstance(k, str) or not k.strip() or any(c.isspace() for c in k):
            raise ValueError(f"{name}={k!r} is not allowed; give a non-empty key without spaces")
    return frozenset(items)


def _match(key: str, keys: frozenset) -> bool:
    return any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


def create_api(engine, settings=None, *, api_keys=(), admin_api_keys=(), cache=None, prefix: str = "/v1",
               max_queue: int = DEFAULT_MAX_QUEUE, max_body_bytes: int | None = None, exposed: bool = False):
    """The OpenAI-compatible API over ``engine`` as a ``FastAPI`` app (see the module docstring).

    ``api_keys``: Bearer keys that may call it (default: ``Settings.api_keys``, ``$GPT_DEMO_API_KEYS``;
    none: open, for a loopback host); ``admin_api_keys`` (default ``$GPT_DEMO_ADMIN_API_KEYS``)
    may also delete models. ``exposed`` (a non-loopback host) without admin keys turns the admin
    routes off, as the web app does. ``cache`` is the engine cache to share (default: one over
    ``engine``, bounded by ``Settings.limits.max_engines``). Generations run ``Settings.limits.concurrency`` at once (the batch), embeddings
    and moderation ``Settings.limits.jobs``.
    """
    from fastapi import APIRouter, Depends, FastAPI
    from fastapi.responses import JSONResponse

    from ..config import Settings
    from ..engine_cache import EngineCache
    from . import generate, models

    settings = settings or getattr(engine, "settings", None) or Settings.from_env()
    api_keys = _keys("api_keys", tuple(api_keys or ()) or tuple(getattr(settings, "api_keys", ()) or ()))
    admin_api_keys = _keys("admin_api_keys",
                           tuple(admin_api_keys or ()) or tuple(getattr(settings, "admin_api_keys", ()) or ()))
    if cache is None:
        cache = EngineCache(base=engine, settings=settings, progress=False)
    elif cache.base is None:
        raise ValueError("cache=EngineCache() is not allowed without a base; build it as EngineCache(base=engine)")
    limits = settings.limits
    state = APIState(
        engine=engine, settings=settings, cache=cache, gate=JobGate(limits.concurrency, max_queue),
        jobs=JobGate(limits.jobs, max_queue),
        api_keys=api_keys, admin_api_keys=admin_api_keys, exposed=exposed,
        max_body_bytes=max_body_bytes or max(1 << 20, 8 * limits.max_total_chars),
        created=models.now(), base=engine.model_name,
    )
    app = FastAPI(title="gpt-demo OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gpt_demo = state
    install_handlers(app)

    # -- auth ---------------------------------------------------------------------------
    def caller_key(request: Request) -> str | None:
        if not (state.api_keys or state.admin_api_keys):
            return None
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise APIError(401, "You didn't provide an API key. You need to provide your API key in an "
                                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                           code="invalid_api_key")
        if not (_match(key, state.api_keys) or _match(key, state.admin_api_keys)):
            raise APIError(401, f"Incorrect API key provided: {key[:3]}***{key[-2:]}.", code="invalid_api_key")
        return key

    def admin(request: Request) -> None:
        key = caller_key(request)
        if state.admin_api_keys:
            if key is None or not _match(key, state.admin_api_keys):
                raise APIError(403, "This route needs an admin API key (--admin-api-key); yours is not one.",
                               code="insufficient_permissions")
        elif state.exposed or state.api_keys:  # as the web app: exposed, or keys but no admin key, is locked
            raise APIError(403, "Admin routes are off: there is no admin key. Start the server with "
                                "--admin-api-key KEY to turn them on.", code="insufficient_permissions")

    async def read_json(request: Request) -> dict:
        """The JSON object body, refused with 413 above ``max_body_bytes`` (before reading all of it)."""
        limit = state.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise APIError(413, f"The request body has {int(length):,} bytes; the limit is {limit:,}.",
                           code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"The request body is over the limit of {limit:,} bytes.",
                               code="request_too_large")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks) or b"null")
        except (ValueError, UnicodeDecodeError):
            raise bad_request("We could not parse the JSON body of your request. (HINT: This likely means you "
                              "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        return body

    async def resolve(model) -> object:
        """The chat engine for ``model`` (an adapter loads once, in a gate slot)."""
        if model == state.base:
            return state.engine
        return await state.gate.run(models.chat_engine, state.cache, state.base, model, state.settings)

    router = APIRouter(dependencies=[Depends(caller_key)])

    # -- models -------------------------------------------------------------------------
    @router.get("/models")
    async def list_models():
        rows = await asyncio.to_thread(models.model_objects, state.base, state.settings, state.created)
        return {"object": "list", "data": rows}

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str):
        rows = await asyncio.to_thread(models.model_objects, state.base, state.settings, state.created)
        for row in rows:
            if row["id"] == model_id:
                return row
        raise models.not_found(model_id)

    @router.delete("/models/{model_id:path}", dependencies=[Depends(admin)])
    async def delete_model(model_id: str):
        from ..models.adapters import delete_adapter

        name = models.adapter_name(state.base, model_id) or await asyncio.to_thread(
            models.ft_adapter_name, state.settings, model_id)
        if name is None:
            if model_id in (state.base, models.EMBEDDING_MODEL):
                raise bad_request(f"The model `{model_id}` is built in and cannot be deleted; only trained "
                                  "adapters can.", "model")
            raise models.not_found(model_id)
        if name not in await asyncio.to_thread(models.chat_adapters, state.settings):
            raise models.not_found(model_id)
        state.cache.forget(name)
        await asyncio.to_thread(delete_adapter, name, state.settings)
        return {"id": model_id, "object": "model", "deleted": True}

    # -- generation ---------------------------------------------------------------------
    async def generation(request: Request, chat: bool):
        body = await read_json(request)
        check_fields(body, CHAT_FIELDS if chat else COMPLETION_FIELDS, "chat" if chat else "completions")
        model = require(body, "model", "model")
        if chat:
            messages = chat_messages(body)
        else:
            prompts = text_inputs(body, "prompt", max_items=generate.MAX_PROMPTS)
        engine = await resolve(model)
        if chat:
            job = await asyncio.to_thread(generate.chat_job, engine, model, body, messages, state.limits)
        else:
            job = await asyncio.to_thread(generate.completion_job, engine, model, body, prompts, state.limits)
        if not job.stream:
            completions = await state.gate.run(generate.run_job, job)
            return (generate.chat_body if chat else generate.completion_body)(job, completions)
        await state.gate.acquire()  # a full queue is a 503 now, not a broken stream later
        if await request.is_disconnected():
            state.gate.release()
            return JSONResponse({}, status_code=499)
        return EventStream(job, state.gate)

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        return await generation(request, chat=True)

    @router.post("/completions")
    async def completions(request: Request):
        return await generation(request, chat=False)

    # -- embeddings and moderation ------------------------------------------------------
    @router.post("/embeddings")
    async def embeddings(request: Request):
        body = await read_json(request)
        check_fields(body, EMBEDDING_FIELDS, "embeddings")
        model = body.get("model") or models.EMBEDDING_MODEL
        texts = text_inputs(body, "input", max_items=models.MAX_EMBEDDING_INPUTS)
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise bad_request(f"encoding_format={fmt!r} is not allowed; choose float or base64", "encoding_format")
        dimensions = get_int(body, "dimensions", 1, 1 << 16)
        try:
            state.limits.check_texts("input", texts)
        except ValueError as exc:
            raise APIError(400, str(exc), param="input") from None
        for i, text in enumerate(texts):
            if not text.strip():
                raise bad_request(f"input[{i}]={text!r} is not allowed; an input must not be empty", "input")
        engine = None if model == models.EMBEDDING_MODEL else await resolve(model)
        return await state.jobs.run(models.embed, engine, texts, dimensions, fmt, model)

    @router.post("/moderations")
    async def moderations(request: Request):
        body = await read_json(request)
        check_fields(body, MODERATION_FIELDS, "moderations")
        model = body.get("model") or models.MODERATION_MODELS[0]
        if model not in models.MODERATION_MODELS:
            raise bad_request(f"model={model!r} is not allowed for moderations; choose one of "
                              f"{', '.join(models.MODERATION_MODELS)} (all run gpt-demo's classifier)", "model")
        texts = text_inputs(body, "input", max_items=state.limits.max_texts, allow_parts=True)
        try:
            state.limits.check_texts("input", texts)
        except ValueError as exc:
            raise APIError(400, str(exc), param="input") from None
        return await state.jobs.run(models.moderate, texts)

    # -- files and fine-tuning jobs (gpt_demo.server.files, .finetune) ---------------------
    from . import files as file_routes, finetune

    finetune.install(state)
    file_routes.add_routes(router, state, admin=Depends(admin))
    finetune.add_routes(router, state, admin=Depends(admin), read_json=read_json)

    app.include_router(router, prefix=prefix)

    @app.get("/health")
    async def health():
        scheduler = state.engine.scheduler
        return {"status": "ok", "model": state.base, **state.gate.describe(), "jobs": state.jobs.describe(),
                "batch": scheduler.stats() if scheduler is not None else None}

    return app


def _event_stream_class():
    from starlette.responses import StreamingResponse

    class _EventStream(StreamingResponse):
        """Server-sent events of one job; however the response ends, the generation stops."""

        def __init__(self, job, gate):
            self.gate = gate
            self.slot = {"held": True}  # until the worker thread takes the slot over
            super().__init__(self._events(job, gate, self.slot), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        @staticmethod
        async def _events(job, gate, slot):
            from ..generation.scheduler import Busy
            from . import generate
            from .errors import from_value_error

            chunks = generate.Chunks(job)
            for line in chunks.opening():
                yield line
            try:
                async for event in gate.iterate(lambda: generate.stream_job(job), slot=slot):
                    for line in chunks.event(event):
                        yield line
            except APIError as exc:
                for line in chunks.error(exc):
                    yield line
                return
            except Busy as exc:
                for line in chunks.error(APIError(503, str(exc), type="server_error")):
                    yield line
                return
            except ValueError as exc:
                for line in chunks.error(from_value_error(exc)):
                    yield line
                return
            for line in chunks.closing():
                yield line

        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self.body_iterator.aclose()  # a client that left: stop the worker at its next token
                if self.slot["held"]:  # it left before generation started
                    self.slot["held"] = False
                    self.gate.release()

    return _EventStream


def EventStream(job, gate):
    """A ``StreamingResponse`` of ``job``'s chunks; the caller already holds ``gate``'s slot."""
    global _EVENT_STREAM
    if _EVENT_STREAM is None:
        _EVENT_STREAM = _event_stream_class()
    return _EVENT_STREAM(job, gate)


_EVENT_STREAM = None
