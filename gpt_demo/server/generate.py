"""Chat and text completions in OpenAI's shapes: request -> ``Job`` -> response body or stream chunks.

    job = chat_job(engine, "smollm2-135m-instruct", body, limits)   # validated, rendered; no model work yet
    body = chat_body(job, run_job(job))                              # non-streaming
    for event in stream_job(job): ...                                # ("delta", index, text) | ("done", i, Completion)

Everything here is plain and blocking; ``routes`` runs it in the gate's threads. Tokens come from
``gpt_demo.generation.decoding.decode`` (the one decode loop), each prompt rendered by the engine's
own chat template, so ``usage.prompt_tokens`` is the length of exactly what the model read.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator

from ..generation.params import GenerationParams
from .errors import APIError, bad_request, from_value_error
from .fields import get_bool, get_int, stream_options

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_LEGACY_LOGPROBS = 5
MAX_PROMPTS = 16  # prompts in one /v1/completions call (each gets n choices)


@dataclass
class Job:
    """One validated request: the engine, the parameters and each prompt's token ids."""

    engine: object
    model: str
    params: GenerationParams
    prompts: list[list[int]]
    texts: list[str] = field(default_factory=list)  # raw prompts (completions: echo and text_offset)
    chat: bool = True
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    legacy_logprobs: int | None = None
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.id = self.id or (("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24])
        self.created = self.created or int(time.time())

    @property
    def n(self) -> int:
        return self.params.n


def fingerprint(engine) -> str:
    d = engine.describe()
    return f"fp_gpt-demo_{d['device']}_{d['quantization']}"


def _params(engine, body: dict, *, chat: bool) -> GenerationParams:
    window = engine.context_window
    max_name = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    default = engine.defaults.max_tokens if chat else COMPLETIONS_DEFAULT_MAX_TOKENS
    max_tokens = get_int(body, max_name, 1, window, default=min(default, window))
    values = {k: body.get(k) for k in ("temperature", "top_p", "frequency_penalty", "presence_penalty", "n", "seed",
                                       "stop")}
    values["max_tokens"] = max_tokens
    if chat:
        values["logprobs"] = get_bool(body, "logprobs")
        values["top_logprobs"] = body.get("top_logprobs")
    else:
        k = get_int(body, "logprobs", 0, MAX_LEGACY_LOGPROBS)
        values["logprobs"] = k is not None
        values["top_logprobs"] = k or 0
        values["best_of"] = body.get("best_of")
    if isinstance(values.get("stop"), list) and not values["stop"]:
        values["stop"] = None
    try:
        return GenerationParams(**{k: v for k, v in values.items() if v is not None})
    except ValueError as exc:
        raise from_value_error(exc, rename={"max_tokens": max_name}) from None


def _too_long(engine, tokens: int, max_tokens: int, what: str, param: str) -> APIError:
    window = engine.context_window
    return APIError(400, f"This model's maximum context length is {window} tokens. However, you requested "
                         f"{tokens + max_tokens} tokens ({tokens} in the {what}, {max_tokens} for the completion). "
                         f"Please reduce the length of the {what} or the completion.",
                    param=param, code="context_length_exceeded")


def chat_job(engine, model: str, body: dict, messages: list[dict], limits) -> Job:
    """Validate and render a chat request (blocking: tokenizes)."""
    from .fields import no_tools, response_format

    no_tools(body)
    response_format(body)
    stream = get_bool(body, "stream")
    include_usage = stream_options(body, stream)
    params = _params(engine, body, chat=True)
    try:
        limits.check_messages("messages", messages)
        conv = engine.conversation(messages)
    except ValueError as exc:
        raise from_value_error(exc, rename={"content": "messages", "role": "messages"}) from None
    ids = conv.render(engine.tokenizer)
    if len(ids) + params.max_tokens > engine.context_window:
        raise _too_long(engine, len(ids), params.max_tokens, "messages", "messages")
    return Job(engine, model, params, [ids], chat=True, stream=stream, include_usage=include_usage)


def completion_job(engine, model: str, body: dict, prompts: list[str], limits) -> Job:
    """Validate and tokenize a /v1/completions request (blocking: tokenizes)."""
    if body.get("suffix") not in (None, ""):
        raise bad_request("suffix is not supported: this model has no fill-in-the-middle mode; leave it out",
                          "suffix")
    if body.get("logit_bias"):
        raise bad_request("logit_bias is not supported by this server; leave it out or send {}", "logit_bias")
    stream = get_bool(body, "stream")
    include_usage = stream_options(body, stream)
    echo = get_bool(body, "echo")
    params = _params(engine, body, chat=False)
    if stream and params.best_of is not None and params.best_of > 1:
        raise bad_request("best_of cannot be used with stream: the best candidates are known only at the end",
                          "best_of")
    if echo and params.logprobs:
        raise bad_request("echo with logprobs is not supported: this server returns log-probabilities of "
                          "generated tokens only", "echo")
    if len(prompts) > MAX_PROMPTS:
        raise bad_request(f"prompt has {len(prompts)} prompts; the limit is {MAX_PROMPTS} per request", "prompt")
    try:
        limits.check_texts("prompt", prompts)
    except ValueError as exc:
        raise from_value_error(exc) from None
    ids = []
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise bad_request(f"prompt[{i}]='' is not allowed; give a non-empty string", "prompt")
        row = engine.tokenizer(prompt)["input_ids"]
        if len(row) + params.max_tokens > engine.context_window:
            raise _too_long(engine, len(row), params.max_tokens, "prompt", "prompt")
        ids.append(row)
    return Job(engine, model, params, ids, texts=list(prompts), chat=False, stream=stream,
               include_usage=include_usage, echo=echo, legacy_logprobs=body.get("logprobs"))


# -- running --------------------------------------------------------------------------
def _decode(job: Job, ids: list[int]):
    return job.engine.generate(ids, job.params)  # joins the model's running batch (generation.scheduler)


def run_job(job: Job) -> list:
    """Every prompt's ``Completion`` (blocking)."""
    from ..generation.decoding import run_to_end

    streams = []  # all queued at once: they share the batch
    try:
        for ids in job.prompts:
            streams.append(_decode(job, ids))
        return [run_to_end(gen) for gen in streams]
    finally:
        for gen in streams:  # after an error, the prompts still queued give their places back
            gen.close()


def stream_job(job: Job) -> Iterator[tuple]:
    """("delta", choice index, text) as text appears, then ("done", prompt index, Completion) per prompt."""
    for p, ids in enumerate(job.prompts):
        gen = _decode(job, ids)
        try:
            while True:
                try:
                    delta = next(gen)
                except StopIteration as done:
                    yield ("done", p, done.value)
                    break
                yield ("delta", p * job.n + delta.index, delta.text)
        finally:
            gen.close()


# -- shapes ---------------------------------------------------------------------------
def usage(job: Job, completions: list) -> dict:
    prompt = sum(len(ids) for ids in job.prompts)
    completion = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _token(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(choice) -> dict | None:
    if choice.logprobs is None:
        return None
    return {"content": [dict(_token(t.token, t.logprob), top_logprobs=[_token(s, lp) for s, lp in t.top_logprobs])
                        for t in choice.logprobs], "refusal": None}


def legacy_logprobs(choice, offset: int) -> dict | None:
    """The completions endpoint's logprobs: tokens, token_logprobs, top_logprobs, text_offset."""
    if choice.logprobs is None:
        return None
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for t in choice.logprobs:
        top = dict(t.top_logprobs)
        top.setdefault(t.token, t.logprob)  # OpenAI always lists the sampled token too
        out["tokens"].append(t.token)
        out["token_logprobs"].append(t.logprob)
        out["top_logprobs"].append(top)
        out["text_offset"].append(offset)
        offset += len(t.token)
    return out


def chat_body(job: Job, completions: list) -> dict:
    (completion,) = completions
    choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text, "refusal": None},
                "logprobs": chat_logprobs(c), "finish_reason": c.finish_reason} for c in completion.choices]
    return {"id": job.id, "object": "chat.completion", "created": job.created, "model": job.model,
            "choices": choices, "usage": usage(job, completions), "system_fingerprint": fingerprint(job.engine)}


def completion_body(job: Job, completions: list) -> dict:
    choices = []
    for p, completion in enumerate(completions):
        prompt = job.texts[p]
        for c in completion.choices:
            text = (prompt if job.echo else "") + c.text
            choices.append({"index": p * job.n + c.index, "text": text, "logprobs": legacy_logprobs(c, len(prompt)),
                            "finish_reason": c.finish_reason})
    return {"id": job.id, "object": "text_completion", "created": job.created, "model": job.model,
            "choices": choices, "usage": usage(job, completions), "system_fingerprint": fingerprint(job.engine)}


def sse(obj) -> str:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


class Chunks:
    """The stream contract: one id, role first, finish_reason last per choice, usage chunk, [DONE]."""

    def __init__(self, job: Job):
        self.job = job
        self.completions: list = []

    def _chunk(self, choices: list, **extra) -> str:
        job = self.job
        obj = {"id": job.id, "object": "chat.completion.chunk" if job.chat else "text_completion",
               "created": job.created, "model": job.model, "system_fingerprint": fingerprint(job.engine),
               "choices": choices}
        if job.include_usage:
            obj["usage"] = None
        obj.update(extra)
        return sse(obj)

    def _choice(self, index: int, text: str | None, finish=None, logprobs=None) -> dict:
        if self.job.chat:
            delta = {} if text is None else {"content": text}
            return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}

    def opening(self) -> list[str]:
        """Chat: each choice's first delta carries the role. Completions with echo: the prompt first."""
        job = self.job
        if job.chat:
            return [self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None}]) for i in range(job.n)]
        if job.echo:
            return [self._chunk([self._choice(p * job.n + j, text)]) for p, text in enumerate(job.texts)
                    for j in range(job.n)]
        return []

    def event(self, event: tuple) -> list[str]:
        kind = event[0]
        if kind == "delta":
            _, index, text = event
            return [self._chunk([self._choice(index, text)])] if text else []
        _, p, completion = event
        self.completions.append(completion)
        out = []
        for c in completion.choices:
            if self.job.chat:
                logprobs = chat_logprobs(c)
            else:
                logprobs = legacy_logprobs(c, len(self.job.texts[p]))
            out.append(self._chunk([self._choice(p * self.job.n + c.index, None if self.job.chat else "",
                                                 c.finish_reason, logprobs)]))
        return out

    def closing(self) -> list[str]:
        out = []
        if self.job.include_usage:
            out.append(self._chunk([], usage=usage(self.job, self.completions)))
        out.append(sse("[DONE]"))
        return out

    def error(self, exc: APIError) -> list[str]:
        from .errors import error_body

        return [sse(error_body(exc)), sse("[DONE]")]
