"""Request bodies field by field, as OpenAI's API reference defines them.

    >>> check_fields({"model": "m", "messages": [], "foo": 1}, CHAT_FIELDS, "chat")
    Traceback (most recent call last):
    ...
    gpt_demo.server.errors.APIError: Unrecognized request argument supplied: foo

Every endpoint names the fields it serves, those OpenAI defines that it accepts and ignores
(``user``: OpenAI itself only logs it), and those OpenAI defines that this server cannot do
(tools, audio ...): the last give a 400 naming the field rather than being silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import APIError, bad_request

# served: names handled by the endpoint; ignored: accepted with any value; unsupported: a 400 unless empty.
@dataclass(frozen=True)
class Fields:
    served: frozenset
    ignored: frozenset = frozenset()
    unsupported: frozenset = frozenset()


_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
                      "prompt_cache_retention", "parallel_tool_calls"})

CHAT_FIELDS = Fields(
    served=frozenset({"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop",
                      "frequency_penalty", "presence_penalty", "n", "seed", "logprobs", "top_logprobs", "stream",
                      "stream_options", "response_format", "logit_bias", "tools", "tool_choice", "functions",
                      "function_call"}),
    ignored=_IGNORED,
    unsupported=frozenset({"audio", "modalities", "prediction", "reasoning_effort", "verbosity",
                           "web_search_options", "moderation", "prompt_cache_options"}),
)
COMPLETION_FIELDS = Fields(
    served=frozenset({"model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
                      "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix",
                      "temperature", "top_p"}),
    ignored=frozenset({"user"}),
)
EMBEDDING_FIELDS = Fields(served=frozenset({"model", "input", "dimensions", "encoding_format"}),
                          ignored=frozenset({"user"}))
MODERATION_FIELDS = Fields(served=frozenset({"model", "input"}))


def check_fields(body: dict, fields: Fields, what: str) -> None:
    """Refuse fields OpenAI does not define (its own wording) and those this server cannot serve."""
    known = fields.served | fields.ignored | fields.unsupported
    unknown = [k for k in body if k not in known]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise APIError(400, f"Unrecognized request argument{plural} supplied: {', '.join(unknown)}",
                       param=unknown[0])
    for name in fields.unsupported:
        if body.get(name) not in (None, False, [], {}, ""):
            raise bad_request(f"{name} is not supported by this server's {what} endpoint; leave it out", name)


def require(body: dict, name: str, what: str):
    if body.get(name) is None:
        raise bad_request(f"you must provide a {name} parameter", name)
    return body[name]


def get_bool(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{name}={value!r} is not allowed; it must be true or false", name)
    return value


def get_int(body: dict, name: str, lo: int, hi: int, default=None):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad_request(f"{name}={value!r} is out of range; allowed: {lo} <= {name} <= {hi}", name)
    return value


def stream_options(body: dict, stream: bool) -> bool:
    """``include_usage`` from ``stream_options`` (only allowed with ``stream: true``, as OpenAI says)."""
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")
    if not isinstance(opts, dict):
        raise bad_request(f"stream_options={opts!r} is not allowed; give an object", "stream_options")
    unknown = [k for k in opts if k not in ("include_usage", "include_obfuscation")]
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: stream_options.{unknown[0]}",
                       param="stream_options")
    value = opts.get("include_usage", False)
    if not isinstance(value, bool):
        raise bad_request(f"stream_options.include_usage={value!r} is not allowed; it must be true or false",
                          "stream_options")
    return value


def no_tools(body: dict) -> None:
    """Tools and functions need a model trained to call them; an empty list or "none" is fine."""
    for name in ("tools", "functions"):
        if body.get(name):
            raise bad_request(f"{name} is not supported: this model does not call tools; leave {name} out", name)
    for name in ("tool_choice", "function_call"):
        if body.get(name) not in (None, "none", "auto"):
            raise bad_request(f"{name}={body[name]!r} is not supported: this model does not call tools", name)
    if body.get("logit_bias"):
        raise bad_request("logit_bias is not supported by this server; leave it out or send {}", "logit_bias")


def response_format(body: dict) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind in ("json_object", "json_schema"):
        raise bad_request(f"response_format type {kind!r} is not supported: this server has no constrained "
                          "decoding, so it could not promise valid JSON; use {'type': 'text'}", "response_format")
    raise bad_request(f"response_format={fmt!r} is not allowed; give {{'type': 'text'}}", "response_format")


def text_content(content, where: str) -> str:
    """A message's content: a string, or a list of ``{"type": "text", "text": ...}`` parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{where}[{i}] of type {kind!r} is not supported; this model reads text parts "
                                  "only ({'type': 'text', 'text': ...})", "messages")
            parts.append(part["text"])
        return "\n".join(parts)
    raise bad_request(f"{where}={content!r} is not allowed; give a string or a list of text parts", "messages")


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def chat_messages(body: dict) -> list[dict]:
    """OpenAI's messages as ``[{"role", "content"}]`` with text content; the system prompt must come first."""
    messages = require(body, "messages", "chat")
    if not isinstance(messages, list) or not messages:
        raise bad_request(f"messages={messages!r} is not allowed; give a non-empty list of messages", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}]={message!r} is not allowed; give an object with role and content",
                              "messages")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"messages[{i}].role={role!r} is not supported; use system, user or assistant",
                              "messages")
        extra = [k for k in message if k not in ("role", "content", "name")]
        if extra:
            raise APIError(400, f"Unrecognized request argument supplied: messages[{i}].{extra[0]}",
                           param="messages")
        content = text_content(message.get("content"), f"messages[{i}].content")
        if ROLES[role] == "system":
            if out:
                raise bad_request(f"messages[{i}] is a {role} message after the start; this server takes one "
                                  "system prompt, as the first message", "messages")
        out.append({"role": ROLES[role], "content": content})
    if all(m["role"] == "system" for m in out):
        raise bad_request("messages has no user message; add one after the system prompt", "messages")
    return out


def text_inputs(body: dict, name: str, *, max_items: int, allow_parts: bool = False) -> list[str]:
    """``input`` (or ``prompt``) as a list of strings; token arrays are refused with a 400 naming the field."""
    value = require(body, name, name)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise bad_request(f"{name}={value!r} is not allowed; give a string or a non-empty list of strings", name)
    if len(items) > max_items:
        raise bad_request(f"{name} has {len(items)} items; the limit is {max_items}", name)
    out = []
    for i, item in enumerate(items):
        if allow_parts and isinstance(item, dict):
            if item.get("type") != "text" or not isinstance(item.get("text"), str):
                raise bad_request(f"{name}[{i}] of type {item.get('type')!r} is not supported; this server "
                                  "moderates text only", name)
            item = item["text"]
        if isinstance(item, bool) or isinstance(item, (int, list)):
            raise bad_request(f"{name} as token ids is not supported; send text (a string or a list of strings)",
                              name)
        if not isinstance(item, str):
            raise bad_request(f"{name}[{i}]={item!r} is not allowed; give a string", name)
        out.append(item)
    return out
