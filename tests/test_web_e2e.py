"""The web app end to end: launched on a free port, driven over real HTTP with gradio_client.

    .venv/bin/python -m pytest tests/test_web_e2e.py -q
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from gpt_demo.feedback import FeedbackStore  # noqa: E402
from gpt_demo.web.app import build_app, launch  # noqa: E402
from gpt_demo.web.serve_config import ServeConfig  # noqa: E402

# temperature, top_p, max_tokens, stop, frequency_penalty, presence_penalty, best_of, seed, inject start, inject restart
GREEDY = [0.0, 1.0, 16, "", 0.0, 0.0, 1, "", "", ""]


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    store = FeedbackStore(tmp_path_factory.mktemp("web") / "feedback.sqlite")
    app = build_app(engine, store=store, serve=ServeConfig(concurrency=2))
    url = launch(app, ServeConfig(port=0, concurrency=2), block=False, quiet=True)
    yield url, store
    app.close()


def test_a_chat_streams_a_non_empty_reply(server):
    url, _ = server
    client = Client(url, verbose=False)
    shown, box, note = client.predict("What is the capital of France?", "off", *GREEDY, api_name="/chat_add")
    assert box == "" and shown[0]["content"][0]["text"] == "What is the capital of France?"
    job = client.submit("off", *GREEDY, api_name="/chat_reply")
    updates = list(job)
    assert len(updates) > 2  # the reply arrived in pieces
    texts = [u[0][-1]["content"][0]["text"] if u[0][-1]["content"] else "" for u in updates]
    assert all(a == b[: len(a)] for a, b in zip(texts, texts[1:]))  # each update extends the last
    assert "Paris" in texts[-1]


def test_the_server_refuses_bad_parameters_and_stays_up(server):
    url, _ = server
    client = Client(url, verbose=False)
    bad = list(GREEDY)
    bad[7] = "-3"  # seed
    with pytest.raises(Exception, match=r"seed=-3 is out of range; allowed: 0 <= seed"):
        client.predict("Hi", "off", *bad, api_name="/chat_add")
    bad = list(GREEDY)
    bad[3] = "a\nb\nc\nd\ne"  # five stop sequences
    with pytest.raises(Exception, match=r"stop=\['a', 'b', 'c', 'd', 'e'\] is not allowed; give up to 4"):
        client.predict("Hi", "off", *bad, api_name="/chat_add")
    shown, _, _ = client.predict("Hi", "off", *GREEDY, api_name="/chat_add")
    assert len(shown) == 1  # the refused message was not added


def test_a_rank_submission_writes_exactly_one_row_and_an_invalid_one_none(server):
    url, store = server
    before = store.counts()["rankings"]
    client = Client(url, verbose=False)
    out = client.predict("Write a haiku about the sea.", 2, *[1.0, 1.0, 12, "", 0.0, 0.0, 1, "5", "", ""],
                         api_name="/rank_generate")
    boxes = out[:6]  # gr.update dicts: value and visibility
    assert [b["visible"] for b in boxes] == [True, True, False, False, False, False]
    answers = [boxes[0]["value"], boxes[1]["value"]]
    assert all(isinstance(a, str) and a for a in answers) and out[-1].startswith("2 answers sampled")
    status, stats = client.predict("Write a haiku about the sea.", 2, *answers, "", "", "", "", "2", "1",
                                   None, None, None, None, api_name="/rank_submit")
    assert status.startswith("Stored ranking #") and store.counts()["rankings"] == before + 1
    latest = list(store.rankings())[-1]
    assert latest.candidates == answers and latest.ranks == [2, 1] and latest.params["seed"] == 5
    status, _ = client.predict("Write a haiku about the sea.", 2, *answers, "", "", "", "", "1", "1",
                               None, None, None, None, api_name="/rank_submit")
    assert status.startswith("Not stored:") and "rank 2 is missing, rank 1 is used twice" in status
    assert store.counts()["rankings"] == before + 1


def test_load_eight_clients_submit_25_rankings_each(server):
    """200 rankings from 8 concurrent clients: all stored, none lost or duplicated; chat still answers."""
    url, store = server
    before = {r.prompt for r in store.rankings()}
    errors = []

    def client_run(c):
        try:
            client = Client(url, verbose=False)
            for i in range(25):
                status, _ = client.predict(f"load c{c} r{i}", 3, "first", "second", "third", "", "", "",
                                           "3", "1", "2", None, None, None, api_name="/rank_submit")
                assert status.startswith("Stored ranking #"), status
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client_run, args=(c,)) for c in range(8)]
    [t.start() for t in threads]
    [t.join(timeout=600) for t in threads]
    assert errors == []
    prompts = [r.prompt for r in store.rankings() if r.prompt not in before]
    assert len(prompts) == 200 and set(prompts) == {f"load c{c} r{i}" for c in range(8) for i in range(25)}
    client = Client(url, verbose=False)
    client.predict("Say hello.", "off", *GREEDY, api_name="/chat_add")
    final = client.predict("off", *GREEDY, api_name="/chat_reply")
    assert final[0][-1]["role"] == "assistant" and final[0][-1]["content"][0]["text"].strip()


def test_auth_keeps_strangers_out(engine, tmp_path):
    import httpx
    from gradio_client.exceptions import AuthenticationError

    import openai

    app = build_app(engine, store=FeedbackStore(tmp_path / "f.sqlite"))
    url = launch(app, ServeConfig(port=0, auth="alice:wonderland", api_keys=("sk-test",)), block=False, quiet=True)
    try:
        assert httpx.get(f"{url}config").status_code == 401
        with pytest.raises(AuthenticationError, match="credentials were not provided. Please login"):
            Client(url, verbose=False)
        client = Client(url, auth=("alice", "wonderland"), verbose=False)
        scores, badge, raw, table = client.predict("I want to kill him", *[0.5] * 8, api_name="/moderate")
        assert raw["categories"]["violence"] is True
        # The REST API on the same port has its own keys: gradio's login neither opens nor blocks it.
        bare = httpx.get(f"{url}v1/models")
        assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}v1", api_key="sk-wrong", max_retries=0).models.list()
        keyed = openai.OpenAI(base_url=f"{url}v1", api_key="sk-test", max_retries=0)
        assert engine.model_name in [m.id for m in keyed.models.list().data]
    finally:
        app.close()
    # Logins on the page but no API key: /v1 is not served at all, so it is no way round the login.
    app = build_app(engine, store=FeedbackStore(tmp_path / "g.sqlite"))
    url = launch(app, ServeConfig(port=0, auth="alice:wonderland"), block=False, quiet=True)
    try:
        listed = httpx.get(f"{url}v1/models")
        assert listed.status_code != 200 and engine.model_name not in listed.text
        with pytest.raises(openai.APIStatusError):
            openai.OpenAI(base_url=f"{url}v1", api_key="anything", max_retries=0).models.list()
    finally:
        app.close()


def test_the_openai_api_is_served_on_the_web_apps_port(server, engine):
    """`gpt-demo serve` gives both: the page at /, OpenAI's API at /v1 (what `make run` starts)."""
    import httpx
    import openai

    url, _ = server
    page = httpx.get(url)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    client = openai.OpenAI(base_url=f"{url}v1", api_key="unused", max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert engine.model_name in ids and "all-minilm-l6-v2" in ids
    answer = client.chat.completions.create(model=engine.model_name, temperature=0, max_tokens=16,
                                            messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in answer.choices[0].message.content and answer.usage.completion_tokens <= 16
    missing = httpx.get(f"{url}v1/no-such-route")  # the API's own 404, in OpenAI's envelope, not gradio's page
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_serve_api_only_serves_the_api_alone(gpt_demo_home):
    import httpx
    import openai

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpt_demo", "serve", "--api-only", "--port", str(port),
                             "--api-key", "sk-only"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:  # the model loads before the port opens; this line says it is open
            seen.append(line)
            if "OpenAI-compatible API for" in line:
                break
        assert any(f"http://127.0.0.1:{port}/v1" in x for x in seen), "".join(seen)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):  # uvicorn binds right after printing; bounded retries, no fixed sleep
            try:
                httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                threading.Event().wait(0.1)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-only", max_retries=0)
        assert [m.id for m in client.models.list().data][0] == "smollm2-135m-instruct"
        assert httpx.get(f"{base}/").status_code == 404  # no web page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    both = subprocess.run([sys.executable, "-m", "gpt_demo", "serve", "--api-only", "--no-api"],
                          capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_warns_when_exposed_without_auth(gpt_demo_home):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpt_demo", "serve", "--host", "0.0.0.0", "--port", str(port)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        lines = []
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if "WARNING" in line:
                break
        assert any("WARNING: the app is open to every machine that can reach 0.0.0.0" in x and "--auth" in x
                   for x in lines), "".join(lines)
        while not any("WARNING: the API is open" in x for x in lines):  # the /v1 routes are open too
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
        assert any("WARNING: the API is open to every machine" in x and "--api-key" in x for x in lines), "".join(lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = subprocess.run([sys.executable, "-m", "gpt_demo", "serve", "--auth", "nopassword"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "auth='nopassword' is not allowed; give user:password" in bad.stderr
