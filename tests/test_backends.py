"""Remote backends (gpt_demo/backends/): a real ``python -m gpt_demo.server`` subprocess is the remote.

The same default model runs here (the ``engine`` fixture) and on the server, so what the remote
returns can be checked against the local engine's own answers, not just for shape.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from servers import stop_process

from gpt_demo.api import Streamed
from gpt_demo.backends import Capabilities, CapabilityMissing, is_remote, parse_spec
from gpt_demo.backends.http import JSONClient, RemoteError, RemoteUnreachable

KEY = "sk-remote-test"
KEY_ENV = "REMOTE_TEST_API_KEY"
MODEL = "smollm2-135m-instruct"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def remote_url(tmp_path_factory, session_home):
    home = tmp_path_factory.mktemp("remote-home")
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    env = {**os.environ, "GPT_DEMO_HOME": str(home), "HF_HUB_OFFLINE": "1", "GPT_DEMO_CONCURRENCY": "4"}
    port = _free_port()
    log = open(home / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "gpt_demo.server", "--port", str(port), "--api-key", KEY],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    client = JSONClient(url, KEY, timeout=5, retries=0)
    deadline = time.monotonic() + 300
    try:
        while True:  # the server is up when /v1/models answers (a bounded poll, not an ordering sleep)
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                client.get("/models")
                break
            except (RemoteUnreachable, RemoteError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, log)


@pytest.fixture
def remote(remote_url, monkeypatch):
    from gpt_demo.api import load_engine

    monkeypatch.setenv(KEY_ENV, KEY)
    return load_engine(f"gpt-demo:{remote_url}#{MODEL}", api_key_env=KEY_ENV)


def test_specs_are_parsed_from_one_table_and_bad_ones_are_named():
    assert parse_spec("openai:http://h:8000/v1/#m").base_url == "http://h:8000/v1"
    assert parse_spec("llamacpp:").base_url == "http://localhost:8080/v1" and parse_spec("llamacpp:").model_id is None
    assert parse_spec("vllm:#Qwen/Qwen2.5-7B").model_id == "Qwen/Qwen2.5-7B"
    assert is_remote("openai:http://h/v1") and not is_remote("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert not is_remote("./models/x.gguf") and not is_remote("C:/models/x.gguf")
    with pytest.raises(ValueError, match=r"the openai backend needs a URL; give openai:http://HOST:PORT/v1#MODEL"):
        parse_spec("openai:#gpt-4o")
    with pytest.raises(ValueError, match=r"the URL 'ftp://h/v1' is not allowed; it must start with http"):
        parse_spec("openai:ftp://h/v1#m")


def test_chat_and_its_stream_give_the_local_models_answer(remote, engine):
    local = engine.chat("What is the capital of France?", temperature=0, max_tokens=16)
    answer = remote.chat("What is the capital of France?", temperature=0, max_tokens=16)
    assert answer.text == local.text and "Paris" in answer.text
    assert answer.model == f"gpt-demo:{remote.spec.base_url}#{MODEL}"
    assert answer.completion_tokens == 16 or answer.choices[0].finish_reason == "stop"
    deltas = list(remote.stream_chat("What is the capital of France?", temperature=0, max_tokens=16))
    assert len(deltas) > 1 and "".join(deltas) == local.text
    assert remote.complete("Once upon a time", temperature=0, max_tokens=8).text == \
        engine.complete("Once upon a time", temperature=0, max_tokens=8).text


def test_n_is_sent_or_fanned_out_with_seeds_and_best_of_ranks_by_logprob(remote):
    params = dict(temperature=1.0, max_tokens=12, seed=5)
    three = remote.chat("Name a colour.", n=3, **params)
    assert len(three.choices) == 3 and [c.index for c in three.choices] == [0, 1, 2]
    from gpt_demo.backends.remote import RemoteEngine

    fanned = RemoteEngine(remote.spec, api_key=KEY, capabilities=Capabilities.remote(n=False))
    out = fanned.chat("Name a colour.", n=3, **params)  # three requests, seeds 5, 6, 7
    alone = [remote.chat("Name a colour.", **{**params, "seed": 5 + i}).text for i in range(3)]
    assert [c.text for c in out.choices] == alone
    best = remote.chat("Name a colour.", n=1, best_of=3, **params)
    assert len(best.choices) == 1 and best.choices[0].total_logprob < 0
    candidates = remote.chat("Name a colour.", n=3, logprobs=True, **params).choices
    top = max(candidates, key=lambda c: c.mean_logprob)
    assert best.text == top.text  # the candidate with the highest log-probability per token


def test_logprobs_match_the_local_engine(remote, engine):
    local = engine.chat("Say hi.", temperature=0, max_tokens=6, logprobs=True, top_logprobs=3).choices[0]
    got = remote.chat("Say hi.", temperature=0, max_tokens=6, logprobs=True, top_logprobs=3).choices[0]
    assert [t.token for t in got.logprobs] == [t.token for t in local.logprobs]
    assert np.allclose([t.logprob for t in got.logprobs], [t.logprob for t in local.logprobs], atol=1e-4)
    assert [a for a, _ in got.logprobs[0].top_logprobs] == [a for a, _ in local.logprobs[0].top_logprobs]
    # A stream gathers them from its chunks: Show probabilities works on a remote's streamed answer.
    stream = Streamed(remote.stream_chat("Say hi.", temperature=0, max_tokens=6, logprobs=True, top_logprobs=3))
    assert "".join(stream) == local.text
    streamed = stream.completion.choices[0].logprobs
    assert [t.token for t in streamed] == [t.token for t in local.logprobs]
    assert np.allclose([t.logprob for t in streamed], [t.logprob for t in local.logprobs], atol=1e-4)
    assert [len(t.top_logprobs) for t in streamed] == [3] * len(streamed)
    raw = Streamed(remote.stream_complete("The capital of France is", temperature=0, max_tokens=3, logprobs=True,
                                          top_logprobs=2))
    text = "".join(raw)
    tokens = raw.completion.choices[0].logprobs  # /completions' own logprobs shape, from its chunks
    assert "".join(t.token for t in tokens) == text and all(len(t.top_logprobs) == 2 for t in tokens)
    with pytest.raises(ValueError, match=r"top_logprobs=20 is not allowed for completions with gpt-demo:.*at most 5"):
        remote.complete("Hi", logprobs=True, top_logprobs=20)


def test_the_next_token_table_comes_from_one_token_completions(remote, engine):
    rows = remote.next_tokens("The capital of France is", top_k=10)
    local = engine.next_tokens("The capital of France is", top_k=5)
    assert len(rows) == 5  # OpenAI's cap on /completions logprobs
    assert [r.token for r in rows] == [r.token for r in local]
    assert np.allclose([r.prob for r in rows], [r.prob for r in local], atol=0.02)  # int4 server, float32 here
    hot = remote.next_tokens("The capital of France is", top_k=5, temperature=2.0)
    assert hot[0].prob < rows[0].prob and abs(sum(r.prob for r in hot) - sum(r.prob for r in rows)) < 1e-6


def test_chat_model_embeddings_come_from_the_server(remote, engine):
    texts = ["a cat sat on the mat", "stock markets fell sharply"]
    theirs, ours = remote.embed(texts, model="chat"), engine.embed(texts, model="chat")
    assert theirs.shape == ours.shape
    assert np.allclose((theirs * ours).sum(1), 1.0, atol=1e-3)  # the same vectors, up to float noise
    assert remote.embed(texts).shape == (2, 384)  # MiniLM runs here, as with the local engine


def test_what_needs_the_weights_is_refused_by_name(remote):
    backend = f"gpt-demo:{remote.spec.base_url}#{MODEL}"
    for call, what in ((lambda: remote.attention("The animal didn't cross"), "show attention maps"),
                       (lambda: remote.strongest_heads("it was", "it", "was"), "show attention maps"),
                       (lambda: remote.step("Hi", 1.0), "step through sampling"),
                       (lambda: remote.score([1], [2]), "score a given answer"),
                       (lambda: remote.score_answer("Hi", "Hello"), "score a given answer"),
                       (lambda: remote.chat("Hi", inject_start_text="Sure"), "start a chat answer from given text")):
        with pytest.raises(CapabilityMissing, match=f"the backend {backend} cannot {what}"):
            call()
    assert remote.describe()["capabilities"]["attention"] is False
    from gpt_demo.api import load_engine

    with pytest.raises(ValueError, match=r"adapter='tiny' is not allowed with the remote model gpt-demo:"):
        load_engine(f"gpt-demo:{remote.spec.base_url}#{MODEL}", adapter="tiny")


def test_a_remote_error_reaches_the_user_with_its_status_and_message(remote, remote_url):
    with pytest.raises(RemoteError) as info:
        remote.chat("Hi", max_tokens=100_000)  # allowed here, beyond the server's window: its own 400
    assert info.value.status == 400 and info.value.param == "max_tokens"
    assert info.value.message.startswith("max_tokens=100000 is out of range")  # the server's words, passed on
    from gpt_demo.backends.remote import RemoteEngine

    with pytest.raises(RemoteError, match="answered HTTP 401") as info:
        RemoteEngine(f"gpt-demo:{remote_url}#{MODEL}", api_key="wrong")
    assert info.value.status == 401
    with pytest.raises(ValueError, match=rf"model='nope' is not served at {remote_url}; it serves {MODEL}"):
        RemoteEngine(f"gpt-demo:{remote_url}#nope", api_key=KEY)
    assert RemoteEngine(f"gpt-demo:{remote_url}", api_key=KEY).spec.model_id == MODEL  # the server's first


def test_a_remote_that_is_down_is_named_after_bounded_retries():
    from gpt_demo.backends.remote import RemoteEngine

    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(RemoteUnreachable, match=rf"cannot reach the remote server at {url}/models after 2 tries"):
        RemoteEngine(f"openai:{url}#m", retries=1)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 0) ``fails`` times, then 200; or always 429; /moved, /plain, /broken: see below."""

    calls: list = []
    fails = 2
    always = None
    retry_after = "0"

    def do_POST(self):
        type(self).calls.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/moved":  # a redirect would carry the Authorization header to evil.example
            self.send_response(307)
            self.send_header("Location", "http://evil.example/v1/x")
            self.end_headers()
            return
        if self.path == "/v1/plain":  # llama.cpp's shape: {"error": "text"}
            body = json.dumps({"error": "the model is loading"}).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/v1/broken":  # one event, then a chunk cut short
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n')
            return
        if self.always or len(self.calls) <= self.fails:
            status = self.always or 503
            body = json.dumps({"error": {"message": f"busy {status}", "type": "server_error"}}).encode()
            self.send_response(status)
            self.send_header("Retry-After", self.retry_after)
        else:
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_503_and_429_are_retried_with_the_servers_retry_after_then_surface():
    _Flaky.calls, _Flaky.always, _Flaky.retry_after = [], None, "0"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = JSONClient(f"http://127.0.0.1:{server.server_port}/v1", retries=3, backoff=5.0)
        waits = []
        client.sleep = waits.append
        assert client.post("/x", {}) == {"ok": True}
        assert len(_Flaky.calls) == 3 and waits == [0.0, 0.0]  # Retry-After: 0 wins over the 5 s backoff
        _Flaky.calls, _Flaky.always, _Flaky.retry_after = [], 429, "-1"  # a nonsense Retry-After: the backoff
        waits.clear()
        with pytest.raises(RemoteError, match=r"answered HTTP 429: busy 429") as info:
            client.post("/x", {})
        assert info.value.status == 429 and len(_Flaky.calls) == 4 and waits == [5.0, 10.0, 20.0]
        _Flaky.always = None
        with pytest.raises(RemoteError, match=r"HTTP 307: redirected to http://evil.example/v1/x; give that URL"):
            client.post("/moved", {})
        with pytest.raises(RemoteError, match=r"answered HTTP 400: the model is loading$"):
            client.post("/plain", {})
        stream = client.stream("/broken", {})
        assert next(stream)["choices"][0]["delta"]["content"] == "Hi"
        with pytest.raises(RemoteUnreachable, match=r"the stream broke"):
            next(stream)
    finally:
        server.shutdown()


def test_the_cli_chats_with_a_remote_and_names_what_it_cannot_do(remote_url, monkeypatch, capsys):
    from gpt_demo.cli import main

    monkeypatch.setenv(KEY_ENV, KEY)
    spec = f"gpt-demo:{remote_url}#{MODEL}"
    assert main(["generate", "--model", spec, "--api-key-env", KEY_ENV, "--temperature", "0", "--max-tokens", "8",
                 "What is the capital of France?"]) == 0
    assert "Paris" in capsys.readouterr().out
    ollama_like = f"ollama:{remote_url}#{MODEL}"  # the table says Ollama gives no logprobs
    assert main(["next-tokens", "--model", ollama_like, "--api-key-env", KEY_ENV, "The capital of France is"]) == 2
    err = capsys.readouterr().err
    assert f"error: the backend {ollama_like} cannot show the next-token probability table" in err
    assert "Traceback" not in err


def test_the_web_app_chats_with_a_remote_and_its_explain_tab_says_what_it_cannot_show(remote, engine, tmp_path):
    pytest.importorskip("gradio")
    from gradio_client import Client

    from gpt_demo.feedback import FeedbackStore
    from gpt_demo.web import explain
    from gpt_demo.web.app import build_app, launch
    from gpt_demo.web.serve_config import ServeConfig

    greedy = [0.0, 1.0, 16, "", 0.0, 0.0, 1, "", "", ""]
    app = build_app(remote, store=FeedbackStore(tmp_path / "f.sqlite"), serve=ServeConfig(concurrency=2))
    url = launch(app, ServeConfig(port=0, concurrency=2), block=False, quiet=True)
    try:
        client = Client(url, verbose=False)
        client.predict("What is the capital of France?", "off", *greedy, api_name="/chat_add")
        shown = list(client.submit("off", *greedy, api_name="/chat_reply"))[-1][0]
        assert shown[-1]["content"][0]["text"] == engine.chat("What is the capital of France?", temperature=0,
                                                             max_tokens=16).text
        with pytest.raises(Exception, match=r"cannot step through sampling"):
            client.predict("The capital of France is", 1.0, 5, None, "", api_name="/explain_step")
    finally:
        app.close()
    figure, reading = explain.show_attention(remote, "The animal didn't cross", 0, "mean", "it")
    assert figure is None and f"the backend {remote.backend} cannot show attention maps" in reading
    import gradio as gr

    from gpt_demo.engine_cache import EngineCache
    from gpt_demo.web import train

    with pytest.raises(gr.Error, match=rf"the backend {remote.backend} cannot train adapters"):
        list(train.run_job(EngineCache(base=remote), remote.settings, "sft", "upload", "x.jsonl", "a", 2, 1e-4,
                           0.1, None))


def test_a_notebook_chats_with_a_remote_and_a_magic_names_what_it_cannot_do(remote_url, engine, monkeypatch):
    pytest.importorskip("IPython")
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    from gpt_demo.notebook.state import NotebookState

    monkeypatch.setenv("GPT_DEMO_REMOTE_KEY", KEY)  # the key variables of gpt-demo: and ollama: (the table)
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "gpt_demo")
    magics = shell.magics_manager.registry["GptMagics"]
    magics.state = NotebookState()
    spec = f"gpt-demo:{remote_url}#{MODEL}"
    shell.run_line_magic("gpt", f"config --model {spec} --temperature 0 --max-tokens 16")
    shell.run_cell_magic("gpt", "--out answer", "What is the capital of France?")
    local = engine.chat("What is the capital of France?", temperature=0, max_tokens=16).text
    assert str(shell.user_ns["answer"]) == local
    with pytest.raises(UsageError, match=rf"the backend ollama:{remote_url}#{MODEL} cannot show the next-token"):
        shell.run_line_magic("gpt_next", f"--model ollama:{remote_url}#{MODEL} The capital of France is")


@pytest.mark.peer
def test_the_same_checks_against_llama_cpp_pythons_server(engine, tmp_path):
    """``python -m llama_cpp.server`` on the packaged GGUF, through the llamacpp: backend (skipped unless
    llama_cpp is importable: it compiles for ~12 minutes, so ``make test`` does not install it)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable (PYTHONPATH=/path/to/llama-cpp-site to run this)")
    from gpt_demo.api import load_engine
    from gpt_demo.models.registry import REGISTRY, packaged_gguf

    gguf = packaged_gguf(REGISTRY[MODEL])
    port = _free_port()
    log = open(tmp_path / "llama.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads", "2",
                             "--n_ctx", "4096", "--chat_format", "chatml", "--interrupt_requests", "False", "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        client, deadline = JSONClient(url, timeout=5, retries=0), time.monotonic() + 300
        while True:
            try:
                client.get("/models")
                break
            except (RemoteUnreachable, RemoteError):
                assert proc.poll() is None and time.monotonic() < deadline, "llama.cpp's server did not start"
                time.sleep(0.2)
        remote = load_engine(f"llamacpp:{url}")  # its one model, whatever it calls it
        answer = remote.chat("What is the capital of France?", temperature=0, max_tokens=16)
        assert "Paris" in answer.text
        assert "".join(remote.stream_chat("What is the capital of France?", temperature=0, max_tokens=16)) == \
            answer.text
        assert len(remote.chat("Name a colour.", n=2, temperature=1.0, seed=1, max_tokens=8).choices) == 2  # fanned
        rows = remote.next_tokens("The capital of France is", top_k=5)
        assert rows and rows[0].token == engine.next_tokens("The capital of France is", top_k=1)[0].token
        with pytest.raises(CapabilityMissing, match=r"the backend llamacpp:.* cannot embed texts"):
            remote.embed(["a cat"], model="chat")
        with pytest.raises(CapabilityMissing, match=r"cannot show attention maps"):
            remote.attention("The animal didn't cross")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_configured_remotes_come_from_flags_and_models_toml_and_bad_entries_are_named(tmp_path):
    from gpt_demo.backends.catalog import add_remote, catalog, configured_remotes
    from gpt_demo.config import Settings

    settings = Settings.from_env({"GPT_DEMO_HOME": str(tmp_path), "GPT_DEMO_REMOTES": "big=vllm:#Qwen/Q7"})
    add_remote(settings, "box", "gpt-demo:http://box:7860/v1#m", "BOX_KEY")
    add_remote(settings, "odd", 'openai:http://h/v1#a "quoted" model')  # escaped, and read back the same
    got = [(c.label, c.spec, c.key_env) for c in configured_remotes(settings)]
    assert got == [("big", "vllm:#Qwen/Q7", None),
                   ("box", "gpt-demo:http://box:7860/v1#m", "BOX_KEY"),
                   ("odd", 'openai:http://h/v1#a "quoted" model', "")]  # "": no key, not OPENAI_API_KEY
    assert [c.kind for c in catalog(settings, MODEL)] == ["base", "remote", "remote", "remote"]
    with pytest.raises(ValueError, match=r"id='box' is already a remote; give another id"):
        add_remote(settings, "box", "openai:http://other/v1#m")
    with pytest.raises(ValueError, match=r"id='a b' is not allowed; give 1-64 letters"):
        add_remote(settings, "a b", "openai:http://h/v1#m")
    with pytest.raises(ValueError, match=r"key_env='1X' is not allowed; give the name of an environment variable"):
        add_remote(settings, "k", "openai:http://h/v1#m", "1X")
    for secret in ("GPT_DEMO_ADMIN_API_KEYS", "HF_TOKEN", "PATH"):  # its value would go to the server named
        with pytest.raises(ValueError, match=rf"key_env='{secret}' is not allowed; name a variable that holds only"):
            add_remote(settings, "k", "openai:http://h/v1#m", secret)
    for url in ("http://u:p@h/v1", "http://h/v1?x=", "http:///v1"):
        with pytest.raises(ValueError, match=r"give scheme://host:port/path only"):
            add_remote(settings, "k", f"openai:{url}#m")
    with pytest.raises(ValueError, match=r"spec='openai:http://h/v1#a\\x7fb' is not allowed; it has control"):
        add_remote(settings, "k", "openai:http://h/v1#a\x7fb")
    (tmp_path / "models.toml").write_text('[[remote]]\nid = "x"\nkind = "nope"\nurl = "http://h/v1"\n')
    with pytest.raises(ValueError, match=r"models.toml: remote\[0\] kind='nope' is not known; choose one of openai"):
        configured_remotes(settings)
    with pytest.raises(ValueError, match=r"remote='just-a-spec' is not allowed; give ID=SCHEME:URL#MODEL"):
        configured_remotes(Settings.from_env({"GPT_DEMO_HOME": str(tmp_path / "b"), "GPT_DEMO_REMOTES": "just-a-spec"}))


def test_an_admin_adds_a_remote_in_the_web_app_and_every_picker_serves_it(remote_url, engine, monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    import gradio as gr

    from gpt_demo.config import Settings
    from gpt_demo.engine_cache import EngineCache
    from gpt_demo.web import pickers, train

    monkeypatch.setenv(KEY_ENV, KEY)
    settings = Settings.from_env({"GPT_DEMO_HOME": str(tmp_path)})
    with pytest.raises(gr.Error, match=r"answered HTTP 401"):  # checked by connecting: the wrong key is named
        train.add_remote_model(settings, "mine", f"gpt-demo:{remote_url}#{MODEL}", "NO_SUCH_TEST_KEY")
    status = train.add_remote_model(settings, "mine", f"gpt-demo:{remote_url}#{MODEL}", KEY_ENV)
    assert status.startswith("Added remote **mine**")
    pool = EngineCache(base=engine, settings=settings)
    assert pickers.labels(pool, engine) == [engine.model_name, "mine"]
    chosen = pickers.resolve(pool, engine, "mine")
    assert chosen.backend == f"gpt-demo:{remote_url}#{MODEL}" and pickers.resolve(pool, engine, "mine") is chosen
    assert chosen.chat("Hi", temperature=0, max_tokens=6).text == engine.chat("Hi", temperature=0, max_tokens=6).text
    outs = train.compare(pool, "Hi", ["mine"], 0.0, 6)  # Compare offers it beside the adapters
    assert outs[1]["label"] == "mine" and outs[1]["value"] == engine.chat("Hi", temperature=0, max_tokens=6).text
