"""The OpenAI-compatible REST API, driven by the official ``openai`` client against a real server.

    pytest -q tests/test_server.py

One server per module (``python -m gpt_demo.server`` in a subprocess on a free port, the real
default model, a real LoRA adapter with random weights so its answers differ from the base).
Raw SSE is read with httpx or plain sockets where the stream contract itself is under test.
"""

from __future__ import annotations

import base64
import json
import math
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from servers import stop_process

openai = pytest.importorskip("openai")

BASE = "smollm2-135m-instruct"
KEY, ADMIN = "sk-test-user", "sk-test-admin"
MAX_QUEUE = 8

def make_adapter(engine, home: Path, name: str) -> None:
    """A real LoRA adapter in peft's layout with a card, as ``gpt-demo sft`` writes one, but with random
    weights (no training run), so its greedy answers differ from the base model's."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from gpt_demo.models.adapters import write_card

    path = home / "adapters" / name
    LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM").save_pretrained(path)
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for module_name, module in engine.loaded.model.named_modules():
        if module_name.endswith(("q_proj", "v_proj")):
            out_dim, in_dim = module.weight.shape
            prefix = f"base_model.model.{module_name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(8, in_dim, generator=gen) * 0.1
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_dim, 8, generator=gen) * 0.1
    save_file(tensors, str(path / "adapter_model.safetensors"))
    write_card(path, {"name": name, "kind": "sft", "base_model": engine.model_name,
                      "created_at": "2026-01-02T03:04:05Z"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=5).json()


def _wait_for(predicate, what: str, timeout: float):
    """Poll ``predicate`` (bounded by ``timeout``); return its first truthy value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, session_home, engine):
    home = tmp_path_factory.mktemp("api-home")
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    env = {**os.environ, "GPT_DEMO_HOME": str(home), "HF_HUB_OFFLINE": "1", "GPT_DEMO_CONCURRENCY": "2"}
    for name in ("tiny", "doomed"):
        make_adapter(engine, home, name)
    port = _free_port()
    log = open(home / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "gpt_demo.server", "--port", str(port), "--device", "cpu",
                             "--api-key", KEY, "--admin-api-key", ADMIN, "--max-queue", str(MAX_QUEUE)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            return _health(url)["status"] == "ok"
        except httpx.HTTPError:
            return False

    try:
        _wait_for(ready, "the server's /health", timeout=300)
        yield {"url": url, "v1": url + "/v1", "home": home, "proc": proc}
    finally:
        stop_process(proc, log)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["v1"], api_key=KEY, max_retries=0, timeout=300)


def _template_tokens(engine, messages) -> int:
    """The tokenizer's own count of the rendered chat template (what usage.prompt_tokens must be)."""
    text = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])


def _sse(lines) -> list:
    """``data:`` payloads of a raw SSE body, as parsed JSON (or the string "[DONE]"); checks the framing."""
    events = []
    for line in lines:
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def _raw_stream(server, path: str, body: dict, key: str = KEY) -> list:
    with httpx.stream("POST", server["v1"] + path, json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=300) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return _sse(list(r.iter_lines()))


def _check_stream_contract(events, n: int, chat: bool = True) -> dict:
    """The contract: one id, role first, finish_reason only last per choice, usage chunk, [DONE]; returns usage."""
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert {c["object"] for c in chunks} == {"chat.completion.chunk" if chat else "text_completion"}
    *body, last = chunks
    assert last["choices"] == [] and set(last["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert all(c["usage"] is None for c in body)
    for index in range(n):
        mine = [c["choices"][0] for c in body if c["choices"][0]["index"] == index]
        assert all(len(c["choices"]) == 1 for c in body)
        if chat:
            assert mine[0]["delta"].get("role") == "assistant"
            assert all("role" not in c["delta"] for c in mine[1:])
        assert mine[-1]["finish_reason"] in ("stop", "length")
        assert all(c["finish_reason"] is None for c in mine[:-1])
    return last["usage"]


def _stream_text(events, index: int = 0, chat: bool = True) -> str:
    out = []
    for c in events[:-1]:
        for choice in c["choices"]:
            if choice["index"] == index:
                out.append((choice["delta"].get("content") or "") if chat else choice["text"])
    return "".join(out)


MESSAGES = [{"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": [{"type": "text", "text": "What is the capital"},
                                         {"type": "text", "text": "of France?"}]}]
FLAT = [MESSAGES[0], {"role": "user", "content": "What is the capital\nof France?"}]


# -- models ---------------------------------------------------------------------------
def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list().data]
    assert BASE in ids and f"{BASE}:tiny" in ids and "all-minilm-l6-v2" in ids
    model = client.models.retrieve(f"{BASE}:tiny")
    assert (model.id, model.object) == (f"{BASE}:tiny", "model")
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.param == "model" and err.value.code == "model_not_found"


# -- chat -----------------------------------------------------------------------------
def test_chat_exact_usage_and_logprobs(client, engine):
    r = client.chat.completions.create(model=BASE, messages=MESSAGES, temperature=0, max_tokens=8, logprobs=True,
                                       top_logprobs=3, user="ignored-as-openai-allows")
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == BASE
    choice = r.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert r.usage.prompt_tokens == _template_tokens(engine, FLAT)  # text parts are joined by a newline
    assert r.usage.completion_tokens == len(choice.logprobs.content)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    first = choice.logprobs.content[0]
    assert len(first.top_logprobs) == 3 and first.logprob <= 0 and bytes(first.bytes).decode() == first.token
    short = client.chat.completions.create(model=BASE, messages=FLAT, temperature=0, max_completion_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2


def test_chat_stream_contract_in_raw_sse(server, client, engine):
    body = {"model": BASE, "messages": FLAT, "temperature": 1.0, "seed": 7, "max_tokens": 6, "n": 2,
            "logprobs": True, "stream": True, "stream_options": {"include_usage": True}}
    events = _raw_stream(server, "/chat/completions", body)
    usage = _check_stream_contract(events, n=2)
    assert usage["prompt_tokens"] == _template_tokens(engine, FLAT)
    finals = [c["choices"][0] for c in events[:-2] if c["choices"][0]["finish_reason"]]
    assert usage["completion_tokens"] == sum(len(f["logprobs"]["content"]) for f in finals)  # every token counted
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # Without include_usage: no usage key at all and no empty-choices chunk.
    events = _raw_stream(server, "/chat/completions", {**body, "stream_options": None, "n": 1, "max_tokens": 2})
    assert all("usage" not in c and c["choices"] for c in events[:-1]) and events[-1] == "[DONE]"


def test_chat_stream_through_the_client(client):
    stream = client.chat.completions.create(model=BASE, messages=FLAT, temperature=0, max_tokens=6, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = client.chat.completions.create(model=BASE, messages=FLAT, temperature=0, max_tokens=6)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_n3_with_seed_is_repeatable(client):
    def ask():
        r = client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": "Name a colour."}],
                                           n=3, seed=1234, temperature=1.0, max_tokens=4)
        assert [c.index for c in r.choices] == [0, 1, 2]
        return [c.message.content for c in r.choices], r.usage.completion_tokens

    first = ask()
    assert ask() == first
    assert len(set(first[0])) > 1  # three samples, not one answer copied three times


def test_stop_sequences(client):
    plain = client.chat.completions.create(model=BASE, messages=FLAT, temperature=0, max_tokens=8)
    text = plain.choices[0].message.content
    word = text.split()[2]
    cut = client.chat.completions.create(model=BASE, messages=FLAT, temperature=0, max_tokens=8,
                                         stop=[" " + word, "\n\n"])
    assert cut.choices[0].message.content == text[: text.index(" " + word)]
    assert cut.choices[0].finish_reason == "stop"


def test_adapter_is_a_chat_model(client):
    ask = dict(messages=FLAT, temperature=0, max_tokens=4)
    base = client.chat.completions.create(model=BASE, **ask)
    tuned = client.chat.completions.create(model=f"{BASE}:tiny", **ask)
    assert tuned.model == f"{BASE}:tiny"
    assert tuned.choices[0].message.content != base.choices[0].message.content


# -- completions ----------------------------------------------------------------------
def test_completions_prompts_n_logprobs_echo_best_of(client, engine):
    prompts = ["Once upon a time", "The sky is"]
    r = client.completions.create(model=BASE, prompt=prompts, max_tokens=3, n=2, seed=3, logprobs=2)
    assert r.object == "text_completion" and [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.usage.prompt_tokens == sum(len(engine.tokenizer(p)["input_ids"]) for p in prompts)
    assert r.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in r.choices)
    for c in r.choices:
        prompt = prompts[c.index // 2]
        lp = c.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 3
        assert c.text == "".join(lp.tokens) and lp.text_offset[0] == len(prompt)
        assert all(len(top) >= 2 and tok in top for tok, top in zip(lp.tokens, lp.top_logprobs))
    echo = client.completions.create(model=BASE, prompt="The sky is", max_tokens=2, temperature=0, echo=True)
    assert echo.choices[0].text.startswith("The sky is") and len(echo.choices[0].text) > len("The sky is")
    best = client.completions.create(model=BASE, prompt="The sky is", max_tokens=3, best_of=3, n=1, seed=5)
    assert len(best.choices) == 1 and best.usage.completion_tokens >= 1
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=BASE, prompt="def add(a, b):", suffix="return c")
    assert err.value.param == "suffix"


def test_completions_stream_contract(server, client):
    body = {"model": BASE, "prompt": "The sky is", "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    events = _raw_stream(server, "/completions", body)
    usage = _check_stream_contract(events, n=1, chat=False)
    plain = client.completions.create(model=BASE, prompt="The sky is", max_tokens=4, temperature=0)
    assert _stream_text(events, chat=False) == plain.choices[0].text
    assert usage == plain.usage.model_dump(exclude_none=True)


# -- embeddings and moderation --------------------------------------------------------
def test_embeddings_formats_and_dimensions(client):
    texts = ["The cat is on the table", "A kitten sits on the desk"]
    default = client.embeddings.create(model="all-minilm-l6-v2", input=texts)  # the client asks for base64
    floats = client.embeddings.create(model="all-minilm-l6-v2", input=texts, encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [384, 384] and floats.usage.prompt_tokens > 0
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    raw = httpx.post(str(client.base_url.join("embeddings")), headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": "all-minilm-l6-v2", "input": texts[0], "encoding_format": "base64"}).json()
    decoded = memoryview(base64.b64decode(raw["data"][0]["embedding"])).cast("f").tolist()
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)
    small = client.embeddings.create(model="all-minilm-l6-v2", input=texts, dimensions=64, encoding_format="float")
    head = floats.data[0].embedding[:64]
    norm = math.sqrt(sum(x * x for x in head))
    assert small.data[0].embedding == pytest.approx([x / norm for x in head], abs=1e-5)
    assert math.isclose(sum(x * x for x in small.data[0].embedding), 1.0, abs_tol=1e-5)
    chat = client.embeddings.create(model=BASE, input="The cat is on the table", encoding_format="float")
    assert len(chat.data[0].embedding) == 576 and chat.model == BASE
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="all-minilm-l6-v2", input=[[1, 2, 3]])
    assert err.value.param == "input"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="all-minilm-l6-v2", input=["x"] * 2049)
    assert err.value.param == "input"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="all-minilm-l6-v2", input="x", dimensions=385)
    assert err.value.param == "dimensions"


def test_moderations_seed_example(client):
    r = client.moderations.create(input="I want to kill him")  # the seed's example, in today's syntax
    assert r.id.startswith("modr-") and r.model == "gpt-demo-moderation-7"  # the classifier and its version
    assert r.results[0].flagged and r.results[0].categories.violence
    assert r.results[0].category_scores.violence > 0.5
    both = client.moderations.create(model="text-moderation-stable",
                                     input=["I want to kill him", "What is the capital of France?"])
    assert [x.flagged for x in both.results] == [True, False]
    with pytest.raises(openai.BadRequestError) as err:
        client.moderations.create(model="gpt-4o", input="hello")
    assert err.value.param == "model"


# -- errors and auth ------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, param", [
    (dict(temperature=3), "temperature"),
    (dict(top_p=0), "top_p"),
    (dict(n=21), "n"),
    (dict(max_tokens=10**6), "max_tokens"),
    (dict(max_completion_tokens=0), "max_completion_tokens"),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
    (dict(top_logprobs=3), "top_logprobs"),
    (dict(frequency_penalty=2.5), "frequency_penalty"),
    (dict(response_format={"type": "json_object"}), "response_format"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}), "response_format"),
    (dict(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    (dict(extra_body={"foo": 1}), "foo"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), "messages"),
    (dict(messages=[{"role": "tool", "content": "x"}]), "messages"),
    (dict(messages=[]), "messages"),
])
def test_chat_errors_are_bad_requests_naming_the_field(client, kwargs, param):
    args = dict(model=BASE, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    args.update(kwargs)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**args)
    assert err.value.status_code == 400 and err.value.param == param, err.value.message
    if param == "foo":
        assert err.value.message.endswith("Unrecognized request argument supplied: foo")


def test_every_error_is_openais_envelope(server):
    h = {"Authorization": f"Bearer {KEY}"}
    v1 = server["v1"]
    cases = [
        (httpx.post(v1 + "/chat/completions", content=b"{not json", headers=h), 400),
        (httpx.post(v1 + "/chat/completions", json=[1, 2], headers=h), 400),
        (httpx.post(v1 + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, headers=h), 400),
        (httpx.get(v1 + "/no/such/route", headers=h), 404),
        (httpx.put(v1 + "/models", headers=h), 405),
        (httpx.post(v1 + "/chat/completions", content=b"{" + b" " * (3 << 20) + b"}", headers=h), 413),
        (httpx.post(v1 + "/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                    headers=h), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert "detail" not in response.text
    assert cases[2][0].json()["error"]["param"] == "model"


def test_auth_401_and_admin_403(server):
    v1 = server["v1"]
    bare = httpx.get(v1 + "/models")
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as err:
        openai.OpenAI(base_url=v1, api_key="sk-wrong", max_retries=0).models.list()
    assert err.value.code == "invalid_api_key" and err.value.type == "invalid_request_error"
    user = openai.OpenAI(base_url=v1, api_key=KEY, max_retries=0)
    admin = openai.OpenAI(base_url=v1, api_key=ADMIN, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        user.models.delete(f"{BASE}:doomed")
    assert admin.models.delete(f"{BASE}:doomed").deleted is True
    assert f"{BASE}:doomed" not in [m.id for m in user.models.list().data]
    with pytest.raises(openai.NotFoundError) as err:
        user.chat.completions.create(model=f"{BASE}:doomed", messages=[{"role": "user", "content": "Hi"}])
    assert err.value.param == "model"
    with pytest.raises(openai.BadRequestError):
        admin.models.delete(BASE)


# -- concurrency ----------------------------------------------------------------------
def test_eight_concurrent_streams_finish_with_exact_usage(server, engine):
    clients = 8
    barrier = threading.Barrier(clients)
    results: dict = {}

    def one(i: int) -> None:
        messages = [{"role": "user", "content": f"Count to {i + 2}."}]
        client = openai.OpenAI(base_url=server["v1"], api_key=KEY, max_retries=0, timeout=300)
        barrier.wait()
        try:
            chunks = list(client.chat.completions.create(
                model=BASE, messages=messages, max_tokens=8, temperature=0, logprobs=True, stream=True,
                stream_options={"include_usage": True}))
            tokens = sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs)
            results[i] = (chunks[-1].usage, _template_tokens(engine, messages), tokens, len({c.id for c in chunks}))
        except Exception as exc:  # reported below with its index
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == clients
    for i, result in sorted(results.items()):
        assert not isinstance(result, Exception), f"client {i}: {result!r}"
        usage, prompt_tokens, tokens, ids = result
        assert usage.prompt_tokens == prompt_tokens and usage.completion_tokens == tokens and ids == 1
    assert _health(server["url"])["running"] == 0


def _raw_request(port: int, path: str, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_full_queue_is_503_and_a_client_that_leaves_stops_its_generation(server, client):
    port = int(server["url"].rsplit(":", 1)[1])
    endless = {"model": BASE, "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 4000, "temperature": 0, "stream": True}
    socks = [_raw_request(port, "/v1/completions", endless) for _ in range(2 + MAX_QUEUE)]
    try:
        def full():
            h = _health(server["url"])
            return h["running"] == 2 and h["waiting"] == MAX_QUEUE
        _wait_for(full, "2 running and a full queue", timeout=120)
        with pytest.raises(openai.InternalServerError) as err:
            client.completions.create(model=BASE, prompt="Hi", max_tokens=2)
        assert err.value.status_code == 503 and err.value.code == "server_overloaded"
        received: dict = {}
        while sum(b.count(b"data: ") >= 3 for b in received.values()) < 2:  # the two running ones really stream
            readable, _, _ = select.select(socks, [], [], 60)
            assert readable, "no stream sent anything for 60 s"
            for s in readable:
                received[s] = received.get(s, b"") + s.recv(65536)
        assert len(received) == 2  # the queued ones got nothing, not even headers
        assert _health(server["url"])["running"] == 2  # still generating when their clients leave
    finally:
        for s in socks:
            s.close()
    # 4000 tokens would take minutes; the workers stop at their next token once the clients have gone.
    _wait_for(lambda: (lambda h: h["running"] == 0 and h["waiting"] == 0)(_health(server["url"])),
              "the abandoned streams to stop", timeout=30)
    assert client.completions.create(model=BASE, prompt="Hi", max_tokens=2).usage.completion_tokens >= 1


def test_keys_from_the_environment(engine, tmp_path):
    """GPT_DEMO_API_KEYS reaches create_api through Settings (the app in-process, over ASGI)."""
    from fastapi.testclient import TestClient

    from gpt_demo.config import Settings
    from gpt_demo.server import create_api

    settings = Settings.from_env({"GPT_DEMO_HOME": str(tmp_path), "GPT_DEMO_API_KEYS": "sk-a,sk-b"})
    http = TestClient(create_api(engine, settings))
    assert http.get("/v1/models").status_code == 401
    assert http.get("/v1/models", headers={"Authorization": "Bearer sk-b"}).status_code == 200
    wrong = http.get("/v1/models", headers={"Authorization": "Bearer sk-c"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_concurrent_requests_share_one_batch_and_answer_as_they_do_alone(server, client):
    """Two streams at once run in the model's one batch (its /health shows both rows) with unchanged answers."""
    import threading

    prompts = ["Tell me a long story about a dragon.", "Describe a day at the beach in detail."]
    kwargs = dict(model="smollm2-135m-instruct", temperature=0, max_tokens=96)
    alone = [client.chat.completions.create(messages=[{"role": "user", "content": p}], **kwargs)
             .choices[0].message.content for p in prompts]
    steps_before = _health(server["url"])["batch"]["steps"]
    streams = [client.chat.completions.create(messages=[{"role": "user", "content": p}], stream=True, **kwargs)
               for p in prompts]
    firsts = [next(iter(s)) for s in streams]  # both requests are in (the role chunk comes once admitted)
    seen = []
    _wait_for(lambda: seen.append(_health(server["url"])["batch"]) or seen[-1]["rows"] == 2,
              "both streams decoding in one batch", timeout=120)
    texts = [None, None]

    def drain(i):
        texts[i] = "".join(c.choices[0].delta.content or "" for c in streams[i] if c.choices)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert firsts[0].choices[0].delta.role == "assistant"
    assert texts == alone
    after = _health(server["url"])["batch"]
    assert after["served"] >= 4 and after["steps"] > steps_before and after["max_batch"] == 2
