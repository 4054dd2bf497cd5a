"""The Jupyter magics in a real IPython shell on the real default model.

    .venv/bin/python -m pytest tests/test_notebook.py -x -q               # everything (%gpt_train is `slow`)
    .venv/bin/python -m pytest tests/test_notebook.py -q -m "not slow"

The quickstart notebook runs top to bottom in a real JupyterLab kernel in tests/test_jupyterlab.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("IPython")
pytest.importorskip("ipywidgets")

from IPython.core.error import UsageError  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

from gpt_demo.notebook import state_of  # noqa: E402
from gpt_demo.notebook.state import NotebookState  # noqa: E402
from gpt_demo.notebook.views import Answer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="session")
def shell(tmp_path_factory):
    """One real InteractiveShell with the extension loaded (history in memory, IPYTHONDIR in tmp)."""
    import os

    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=cfg)
    ip.run_line_magic("load_ext", "gpt_demo")
    return ip


@pytest.fixture
def gpt(shell, engine):
    """The shell with fresh magic state that reuses the session's engine (no second model load)."""
    state = state_of(shell)
    fresh = NotebookState()
    state.__dict__.update(fresh.__dict__)
    state.use_engine(engine)
    return shell


def run(shell, source: str):
    """Run a cell like Jupyter does; return (result, captured outputs)."""
    with capture_output() as captured:
        result = shell.run_cell(source, store_history=True)
    return result, captured


# -- loading --------------------------------------------------------------------------
def test_load_ext_registers_the_magics_and_loads_no_model(tmp_path):
    code = (
        "import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\nip.run_line_magic('load_ext', 'gpt_demo')\n"
        "m = ip.magics_manager.magics\n"
        "print('CELL', sorted(n for n in m['cell'] if n.startswith('gpt')))\n"
        "print('LINE', sorted(n for n in m['line'] if n.startswith('gpt')))\n"
        "print('HEAVY', [x for x in ('torch', 'transformers', 'sentence_transformers') if x in sys.modules])\n"
    )
    env = {**__import__("os").environ, "IPYTHONDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert "CELL ['gpt', 'gpt_embed', 'gpt_moderate']" in proc.stdout, proc.stderr
    assert ("LINE ['gpt', 'gpt_attention', 'gpt_chat', 'gpt_embed', 'gpt_moderate', 'gpt_next', 'gpt_probs', "
            "'gpt_rank', 'gpt_train']") in proc.stdout
    assert "HEAVY []" in proc.stdout


def test_the_first_magic_loads_the_model_once_with_a_progress_line(shell, monkeypatch, engine):
    import gpt_demo.api

    calls = []

    def fake_load_engine(model=None, quantize=None, device=None, settings=None, **kwargs):
        calls.append((model, kwargs))  # settings: the cache's own, always passed down
        return engine

    monkeypatch.setattr(gpt_demo.api, "load_engine", fake_load_engine)
    state = state_of(shell)
    state.__dict__.update(NotebookState().__dict__)
    _, out = run(shell, "%%gpt --max-tokens 2\nHi")
    _, out2 = run(shell, "%%gpt --max-tokens 2\nHi again")
    assert calls == [("smollm2-135m-instruct", {})]  # once, and no adapter= when none is asked for
    texts = [o.data["text/plain"] for o in out.outputs]
    assert texts[0].startswith("Loading smollm2-135m-instruct")
    assert any(t.startswith("Loaded smollm2-135m-instruct") for t in texts)
    assert not any("Loading" in o.data["text/plain"] for o in out2.outputs)


def test_adapter_is_passed_to_load_engine_only_when_given(shell, monkeypatch):
    import gpt_demo.api

    calls = []

    def fake_load_engine(model=None, quantize=None, device=None, settings=None, **kwargs):
        calls.append(kwargs)
        raise ValueError(f"adapter={kwargs.get('adapter')!r} stops here")

    monkeypatch.setattr(gpt_demo.api, "load_engine", fake_load_engine)
    state_of(shell).__dict__.update(NotebookState().__dict__)
    result, out = run(shell, "%%gpt --adapter my-lora\nHi")
    assert calls == [{"adapter": "my-lora"}]
    assert "adapter='my-lora' stops here" in out.stderr
    run(shell, "%gpt config --adapter other")
    run(shell, "%%gpt\nHi")
    run(shell, "%gpt config --adapter none")
    run(shell, "%%gpt\nHi")
    assert calls[1:] == [{"adapter": "other"}, {}]


# -- %%gpt ----------------------------------------------------------------------------
def test_cell_answer_streams_into_one_display_and_out_sets_the_variable(gpt):
    result, out = run(gpt, "%%gpt --temperature 0 --max-tokens 12 --out answer\nWhat is the capital of France?")
    assert result.success, out.stderr
    answer = gpt.user_ns["answer"]
    assert "Paris" in answer
    ids = {o.transient["display_id"] for o in out.outputs}
    assert len(ids) == 1  # one display handle ...
    assert sum(1 for o in out.outputs if not o.update) == 1  # ... created once ...
    assert sum(1 for o in out.outputs if o.update) >= 2  # ... and updated while the answer grows
    assert out.outputs[-1].data["text/markdown"] == answer
    assert out.stdout == ""  # nothing printed token by token
    turns = state_of(gpt).conversation.turns
    assert turns == [{"role": "user", "content": "What is the capital of France?"},
                     {"role": "assistant", "content": answer}]


def test_conversation_carries_across_cells_until_new_or_reset(gpt):
    run(gpt, '%%gpt --max-tokens 4 --system "Be brief."\nHello')
    run(gpt, "%%gpt --max-tokens 4\nAnd again")
    history = gpt.run_line_magic("gpt", "history")
    roles = [m["role"] for m in history.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert "And again" in history._repr_mimebundle_()["text/plain"]
    run(gpt, "%%gpt --max-tokens 4 --new\nFresh start")
    assert [m["content"] for m in state_of(gpt).conversation.turns][0] == "Fresh start"
    assert len(state_of(gpt).conversation.turns) == 2
    gpt.run_line_magic("gpt", "reset")
    assert gpt.run_line_magic("gpt", "history").messages == []


def test_interpolation_of_names_in_and_out_and_literal_braces(gpt):
    run(gpt, 'city = "Lyon"')
    r = gpt.run_cell("6 * 7", store_history=True)
    n = r.execution_count
    body = ('Tell me about {city}. Code: {In[%d]} = {Out[%d]}. JSON: {"a": {}, "b": [1]}. '
            "def f(): return {x: 1 for x in range(2)}. Unknown: {nope} {Out[999]}. Doubled: {{city}}.") % (n, n)
    result, out = run(gpt, "%%gpt --max-tokens 1\n" + body)
    assert result.success, out.stderr
    sent = state_of(gpt).conversation.turns[0]["content"]
    assert sent == ('Tell me about Lyon. Code: 6 * 7 = 42. JSON: {"a": {}, "b": [1]}. '
                    "def f(): return {x: 1 for x in range(2)}. Unknown: {nope} {Out[999]}. Doubled: {{city}}.")
    run(gpt, "%%gpt --max-tokens 1 --new --no-interpolate\nAbout {city}")
    assert state_of(gpt).conversation.turns[0]["content"] == "About {city}"


@pytest.mark.parametrize(
    "line, message",
    [
        ("--temperature 5", "%%gpt: temperature=5.0 is out of range; allowed: 0 <= temperature <= 2"),
        ("--bogus 1", "%%gpt: unrecognized option --bogus"),
        ("--max-tokens lots", "%%gpt: argument --max-tokens: invalid int value: 'lots'"),
        ("--format xml", "%%gpt: argument --format: invalid choice: 'xml'"),
        ("--out 2nd", "--out '2nd' is not allowed"),
        ("--model no-such-model", "%%gpt: model='no-such-model' is not known"),
    ],
)
def test_a_bad_option_is_one_line_not_a_traceback(gpt, line, message):
    result, out = run(gpt, f"%%gpt {line}\nHi")
    assert isinstance(result.error_in_exec, UsageError)
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), out.stderr
    assert message in lines[0]
    assert "Traceback" not in out.stdout + out.stderr
    assert state_of(gpt).conversation.turns == []  # nothing was sent


def test_cells_load_through_the_core_cache_bounded_by_max_engines(gpt, engine, monkeypatch):
    """A cell's --model loads once through gpt_demo.api's EngineCache; GPT_DEMO_MAX_ENGINES bounds what stays."""
    import gpt_demo.api

    calls = []

    def fake_load_engine(model=None, quantize=None, device=None, **kwargs):
        calls.append(model)
        return engine

    monkeypatch.setattr(gpt_demo.api, "load_engine", fake_load_engine)
    monkeypatch.setenv("GPT_DEMO_MAX_ENGINES", "1")
    assert isinstance(state_of(gpt).engines, gpt_demo.api.EngineCache)
    outs = [run(gpt, f"%%gpt --model {name} --max-tokens 1\nHi")[1] for name in ("m1", "m1", "m2", "m1")]
    assert calls == ["m1", "m2", "m1"]  # m1 cached, then dropped for m2 (at most one besides the adopted engine)
    first = [o.data["text/plain"] for o in outs[0].outputs]
    assert first[0] == "Loading m1..." and any(t.startswith("Loaded smollm2-135m-instruct on cpu in") for t in first)
    assert not any("Loading" in o.data["text/plain"] for o in outs[1].outputs)
    row = gpt.run_line_magic("gpt", "config").rows["memory"]
    assert row.endswith("in 2 model(s); at most 1 loaded by cells are kept, least recently used dropped first "
                        "(GPT_DEMO_MAX_ENGINES)"), row
    assert float(row.split(" MB")[0]) == round(engine.loaded.memory_footprint / 2**20, 1)


def test_config_sets_defaults_and_rejects_bad_values(gpt, engine):
    view = gpt.run_line_magic("gpt", "config --max-tokens 3 --temperature 0 --stop \\n")
    assert view.rows["max_tokens"] == "3" and view.rows["temperature"] == "0.0"
    assert view.rows["stop"] == "('\\n',)"
    assert view.rows["loaded"] == "yes"
    run(gpt, "%%gpt --out a\nWrite a long story about a dragon.")
    assert 1 <= len(engine.tokenizer(gpt.user_ns["a"], add_special_tokens=False)["input_ids"]) <= 4
    result, out = run(gpt, "%gpt config --top-p 0 --max-tokens 99")
    assert "top_p=0.0 is out of range" in out.stderr and isinstance(result.error_in_exec, UsageError)
    assert state_of(gpt).config.params["max_tokens"] == 3  # unchanged by the failed call
    assert gpt.run_line_magic("gpt", "config --clear-params").rows["max_tokens"] == "256 (default)"


def test_line_mode_prompt_and_help(gpt):
    gpt.run_line_magic("gpt", "--max-tokens 2 --out short It's a {\"json\": true} day")
    assert state_of(gpt).conversation.turns[0]["content"] == 'It\'s a {"json": true} day'
    assert "--format" in gpt.run_line_magic("gpt", "help")._repr_mimebundle_()["text/plain"]
    assert "usage: %gpt_rank" in gpt.run_line_magic("gpt_rank", "--help").text


def test_formats_choose_what_out_stores():
    fenced = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nEnjoy."
    assert Answer(fenced, "code").value() == "def add(a, b):\n    return a + b"
    assert Answer(fenced, "code")._repr_mimebundle_()["text/markdown"].startswith("```\ndef add")
    assert Answer('Sure: {"capital": "Rome"}', "json").value() == {"capital": "Rome"}
    assert Answer('Sure: {"capital": "Rome"}', "json")._repr_mimebundle_()["application/json"] == {"capital": "Rome"}
    assert Answer("no json here", "json").value() == "no json here"
    assert "(not valid JSON)" in Answer("no json here", "json")._repr_mimebundle_()["text/plain"]
    assert set(Answer("*hi*", "text")._repr_mimebundle_()) == {"text/plain"}


def test_format_code_cell_stores_code_without_fences(gpt):
    result, out = run(gpt, "%%gpt --format code --temperature 0 --max-tokens 24 --out src\n"
                           "Write a Python function that adds two numbers.")
    assert result.success, out.stderr
    assert "```" not in gpt.user_ns["src"] and "def " in gpt.user_ns["src"]
    assert out.outputs[-1].data["text/markdown"].startswith("```\n")


# -- widgets --------------------------------------------------------------------------
def test_chat_panel_sends_streams_and_clears(gpt):
    panel = gpt.run_line_magic("gpt_chat", "--temperature 0 --max-tokens 8")
    assert WIDGET in panel._repr_mimebundle_()
    panel.input.value = "What is the capital of France?"
    panel.send_button.click()  # a click does not wait: the answer streams on the panel's worker thread
    panel._worker.join()
    turns = panel.conversation.turns
    assert [t["role"] for t in turns] == ["user", "assistant"] and "Paris" in turns[1]["content"]
    assert "Paris" in panel.transcript.value and panel.input.value == ""
    assert panel.snapshots >= 1 and "gd-streaming" not in panel.transcript.value  # it streamed, then settled
    panel.temperature.value = 3.0  # the slider clamps to its range: 2.0
    panel.max_tokens.value = 2
    assert panel.send("Another") is not None
    assert len(panel.conversation.turns) == 4
    panel.clear_button.click()
    assert panel.conversation.turns == [] and "No messages yet" in panel.transcript.value


def test_chat_panel_enter_sends_with_the_web_chat_defaults_and_stop_retry_probs_work(gpt, engine):
    from gpt_demo.generation.params import CHAT_DEFAULTS
    from gpt_demo.inspect.token_probs import prob_colour

    panel = gpt.run_line_magic("gpt_chat", "")
    assert (panel.temperature.value, panel.top_p.value, panel.max_tokens.value) == (
        CHAT_DEFAULTS["temperature"], CHAT_DEFAULTS["top_p"], CHAT_DEFAULTS["max_tokens"])
    panel.temperature.value, panel.max_tokens.value = 0.0, 6
    panel.input.value = "What is the capital of France?"
    panel.input._handle_custom_msg({"event": "submit"}, [])  # what the browser sends on Enter
    panel._worker.join()
    first = panel.answer
    assert "Paris" in first and panel.input.value == ""
    assert panel.retry() == first and len(panel.conversation.turns) == 2  # the answer replaced, not appended
    panel.show_probs.value = True
    assert panel.retry() == first
    assert "".join(t.token for t in panel.tokens) == first  # one coloured row per token of the answer
    assert all(f"background:{prob_colour(t.prob)}" in panel.probs.value for t in panel.tokens)
    panel.max_tokens.value = 200
    panel.send("Write a long story about a dragon.", wait=False)
    panel.stop()  # before the first of up to 200 tokens: the answer ends at once
    panel._worker.join()
    assert panel.stopped and len(engine.tokenizer(panel.answer)["input_ids"]) < 20
    # the model reads the partial answer as it stands next turn; "stopped" is said in the status line only
    assert panel.conversation.turns[-1] == {"role": "assistant", "content": panel.answer}
    assert "[stopped]" not in panel.answer and "Stopped" in panel.status.value
    assert panel.stop_button.disabled and not panel.send_button.disabled


class _FakeEngine:
    """Just what ChatPanel calls: ``stream_chat`` yields ``deltas`` (after ``wait`` s), ``score_answer`` raises."""

    def __init__(self, deltas=(), wait=0.0, fail=None, score_error=None):
        self.deltas, self.wait, self.fail, self.score_error = list(deltas), wait, fail, score_error
        self.yielded = 0

    def stream_chat(self, conversation, params):
        import time

        time.sleep(self.wait)  # a best_of stream: nothing for a while, then the whole answer
        if self.fail is not None:
            raise self.fail
        for d in self.deltas:
            self.yielded += 1
            yield d
        return None

    def score_answer(self, messages, answer, top=5):
        raise self.score_error


def _panel(engine):
    from gpt_demo.generation.params import CHAT_DEFAULTS, GenerationParams
    from gpt_demo.notebook.widgets import ChatPanel

    return ChatPanel(engine, GenerationParams.from_dict(CHAT_DEFAULTS))


def test_chat_panel_stop_works_when_the_stream_is_silent_for_a_while():
    panel = _panel(_FakeEngine(["The whole ", "answer.", " More", " never read"], wait=0.3))
    panel.send("Hi", wait=False)
    panel.stop()  # while nothing has come yet
    assert panel.status.value == "<small>Stopping...</small>"
    panel._worker.join(10)
    assert not panel.busy and panel.stopped and panel.answer == "The whole "
    assert panel.engine.yielded == 1  # the stream was closed at its first delta
    assert panel.conversation.turns == [{"role": "user", "content": "Hi"},
                                        {"role": "assistant", "content": "The whole "}]
    empty = _panel(_FakeEngine([""], wait=0.2))
    empty.send("Hello?", wait=False)
    empty.stop()
    empty._worker.join(10)  # stopped before any text: no empty turn, the message back in the box
    assert empty.conversation.turns == [] and empty.input.value == "Hello?" and empty.answer is None
    assert "before the answer began" in empty.status.value


def test_chat_panel_clears_the_old_probabilities_when_a_new_answer_starts(gpt):
    panel = gpt.run_line_magic("gpt_chat", "--temperature 0 --max-tokens 3")
    panel.show_probs.value = True
    panel.send("What is the capital of France?")
    assert panel.tokens and "data-prob" in panel.probs.value
    panel.engine = _FakeEngine(fail=ValueError("the server went away"))
    assert panel.send("And of Italy?") is None
    assert panel.probs.value == "" and panel.tokens == []  # no stale colours beside an error
    assert "the server went away" in panel.status.value and len(panel.conversation.turns) == 2


def test_chat_panel_show_probabilities_after_the_answer_reads_it_back_and_hides(gpt):
    from gpt_demo.backends import CapabilityMissing

    panel = gpt.run_line_magic("gpt_chat", "--temperature 0 --max-tokens 3")
    answer = panel.send("What is the capital of France?")
    assert panel.tokens == [] and panel.probs.layout.display == "none"
    panel.show_probs.value = True  # after the answer: read back through the model once
    assert "".join(t.token for t in panel.tokens) == answer and all(len(t.alternatives) == 5 for t in panel.tokens)
    assert "data-prob" in panel.probs.value and panel.probs.layout.display != "none"
    panel.show_probs.value = False
    assert panel.probs.layout.display == "none"
    remote = _panel(_FakeEngine(["Hello."], score_error=CapabilityMissing("openai:http://gpu:8000/v1#m", "logprobs")))
    remote.send("Hi")
    remote.show_probs.value = True
    assert "cannot give per-token log-probabilities" in remote.status.value and remote.tokens == []


def test_next_tokens_table_follows_the_temperature_slider(gpt):
    table = gpt.run_line_magic("gpt_next", "--top-k 5 The capital of France is")
    assert WIDGET in table._repr_mimebundle_()
    assert table.rows[0].token == " Paris" and len(table.rows) == 5
    warm = table.rows[0].prob
    html_before = table.table.value
    table.temperature.value = 0.3
    assert table.rows[0].token == " Paris" and table.rows[0].prob > warm
    assert table.table.value != html_before and "&#x27; Paris&#x27;" in table.table.value
    result, out = run(gpt, "%gpt_next --temperature 9 hi")
    assert "temperature" in out.stderr and isinstance(result.error_in_exec, UsageError)


def test_embed_map_hover_titles_search_and_out(gpt):
    texts = ["A cat sat on the mat.", "A kitten rested on the rug.", "Stocks fell sharply today.",
             "Investors sold their shares.", "Paris is the capital of France."]
    gpt.user_ns["sentences"] = texts
    emap = gpt.run_line_magic("gpt_embed", "--from sentences --out emb")
    assert WIDGET in emap._repr_mimebundle_()
    svg = emap.plot.value
    assert svg.count("<circle") == 5 and "<title>A kitten rested on the rug.</title>" in svg
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert gpt.user_ns["emb"]["coords"].shape == (5, 2) and gpt.user_ns["emb"]["embeddings"].shape == (5, 384)
    emap.top_k.value = 2
    emap.query.value = "a feline on a carpet"  # Enter in the box runs the search
    assert {texts[i] for i, _ in emap.hits} == {texts[0], texts[1]}
    assert "(match 1)" in emap.plot.value and "<ol>" in emap.results.value
    cell = gpt.run_cell_magic("gpt_embed", "", "alpha\n\nbeta\ngamma\n")
    assert cell.texts == ["alpha", "beta", "gamma"]


def test_embed_from_a_dataframe_column(gpt):
    pd = pytest.importorskip("pandas")
    gpt.user_ns["df"] = pd.DataFrame({"text": ["red apple", "green apple", "blue car"], "n": [1, 2, 3]})
    emap = gpt.run_line_magic("gpt_embed", "--from df --column text")
    assert emap.texts == ["red apple", "green apple", "blue car"]
    result, out = run(gpt, "%gpt_embed --from df")
    assert "choose one of text, n" in out.stderr and isinstance(result.error_in_exec, UsageError)


def test_moderate_rows_thresholds_and_out(gpt):
    table = gpt.run_cell_magic("gpt_moderate", "--out verdicts --threshold violence=0.5",
                               "I want to kill him\n\nWhat is the capital of France?")
    records = gpt.user_ns["verdicts"]
    assert [r["text"] for r in records] == ["I want to kill him", "What is the capital of France?"]
    assert records[0]["flagged"] and "violence" in records[0]["flagged_categories"]
    assert not records[1]["flagged"]
    assert records[0]["thresholds"]["violence"] == 0.5 and len(records[0]["category_scores"]) == 8
    html = table._repr_mimebundle_()["text/html"]
    assert "&ge; 0.50" in html and html.count("<tr>") == 3
    result, out = run(gpt, "%%gpt_moderate --threshold violence=2\nhello")
    assert "--threshold['violence']=2.0 is not allowed" in out.stderr


def test_rank_widget_saves_to_the_shared_store(gpt, engine):
    from gpt_demo.feedback import FeedbackStore

    panel = gpt.run_line_magic("gpt_rank", "-k 3 --max-tokens 6 --seed 1 Write a slogan for a bakery")
    assert WIDGET in panel._repr_mimebundle_() and len(panel.candidates) == 3
    assert panel.submit([1, 1, 2]) is None and "rank" in panel.status.value
    assert FeedbackStore.open().counts() == {"rankings": 0, "pairs": 0}
    for dd, r in zip(panel.ranks, [2, 3, 1]):
        dd.value = r
    panel.submit_button.click()
    assert panel.saved_id is not None and panel.submit_button.disabled
    store = FeedbackStore.open()
    assert store.counts() == {"rankings": 1, "pairs": 3}
    saved = next(store.rankings())
    assert saved.source == "notebook" and saved.model == engine.model_name
    assert saved.prompt == "Write a slogan for a bakery" and saved.ranks == [2, 3, 1]
    assert saved.params["max_tokens"] == 6 and saved.session_id == state_of(gpt).session_id
    result, out = run(gpt, "%gpt_rank -k 1 hi")
    assert "k=1 is out of range" in out.stderr


# -- look inside an answer: --probs and %gpt_probs -------------------------------------------
def _spans(html_text: str) -> list[tuple[float, str]]:
    """(data-prob, background colour) of every token span in tokens_html output."""
    import re

    return [(float(p), c) for p, c in re.findall(r"data-prob='([0-9.]+)' style='background:([^']+)'", html_text)]


def test_probs_colours_match_the_logprobs_and_alternatives_equal_next_tokens(gpt, engine):
    from gpt_demo.inspect.token_probs import prefix_text, prob_colour

    result, out = run(gpt, "%%gpt --probs --temperature 0 --max-tokens 6\nWhat is the capital of France?")
    assert result.success, out.stderr
    assert out.stderr == "" and out.stdout == ""
    _, answer, _, tokens = state_of(gpt).last_probs
    assert answer == state_of(gpt).conversation.turns[-1]["content"] and "".join(t.token for t in tokens) == answer
    html_out = out.outputs[-1].data["text/html"]
    spans = _spans(html_out)
    assert [round(p, 6) for p, _ in spans] == [round(t.prob, 6) for t in tokens]  # one span per token, in order
    assert [c for _, c in spans] == [prob_colour(t.prob) for t in tokens]
    assert "<script" not in html_out and "http" not in html_out
    assert all(len(t.alternatives) == 5 and t.alternatives[0][1] >= t.alternatives[-1][1] for t in tokens)
    assert all(t.rank == 1 for t in tokens)  # greedy: every token was the model's favourite
    cached = gpt.run_line_magic("gpt_probs", "--out seen")
    assert cached.tokens is tokens and gpt.user_ns["seen"] is tokens
    read_back = gpt.run_line_magic("gpt_probs", "--top 3")  # scored again, through the model next_tokens uses
    assert [t.token for t in read_back.tokens] == [t.token for t in tokens]
    # generation ran on the int4 lean path, the read-back on the transformers model: about a percent apart
    assert [t.prob for t in read_back.tokens] == pytest.approx([t.prob for t in tokens], abs=0.02)
    assert all(len(t.alternatives) == 3 for t in read_back.tokens)
    prompt = engine.prompt_text(state_of(gpt).conversation.messages[:-1])
    rows = engine.next_tokens(prefix_text(read_back.tokens, 2, prompt, engine.tokenizer), top_k=3)
    assert [r.token for r in rows] == [tok for tok, _ in read_back.tokens[2].alternatives]
    assert [r.prob for r in rows] == pytest.approx([p for _, p in read_back.tokens[2].alternatives], abs=1e-3)
    assert "the top 3" in read_back._repr_mimebundle_()["text/plain"]


def test_gpt_probs_reuses_the_numbers_only_for_the_same_question_answer_and_model(gpt, engine):
    state = state_of(gpt)
    probs = "%%gpt --probs --temperature 0 --max-tokens 2\nWhat is the capital of France?"
    run(gpt, probs)
    tokens = state.last_probs[3]
    assert gpt.run_line_magic("gpt_probs", "").tokens is tokens
    state.use_engine(engine, "another-model")  # the same weights under another name: a different model to the cache
    assert gpt.run_line_magic("gpt_probs", "--model another-model").tokens is not tokens
    state.conversation.turns[0]["content"] = "Name a city in France."  # the same answer text to another question
    view = gpt.run_line_magic("gpt_probs", "")
    assert view.tokens is not tokens and "read back" in view.caption
    for cell in ("%%gpt --temperature 0 --max-tokens 1\nAnd Italy?",  # an answer without --probs
                 "%%gpt --new --max-tokens 1\nHi"):
        run(gpt, probs)
        assert state.last_probs is not None
        run(gpt, cell)
        assert state.last_probs is None, cell
    run(gpt, "%%gpt --probs --new --temperature 0 --max-tokens 1\nHi")
    assert state.last_probs[:2] == ([{"role": "user", "content": "Hi"}], state.conversation.turns[-1]["content"])
    gpt.run_line_magic("gpt", "reset")
    assert state.last_probs is None


@pytest.mark.parametrize("cells, message", [
    ([], "%gpt_probs: there is no answer yet; ask something with %%gpt first"),
    (["%%gpt --max-tokens 1\nHi"], "%gpt_probs: top=21 is out of range; allowed: 0 <= top <= 20"),
])
def test_gpt_probs_bad_input_is_one_line(gpt, cells, message):
    for cell in cells:
        run(gpt, cell)
    result, out = run(gpt, "%gpt_probs --top 21" if cells else "%gpt_probs")
    assert isinstance(result.error_in_exec, UsageError)
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"UsageError: {message}"), out.stderr


# -- %gpt_attention ------------------------------------------------------------------------
SEED = "The animal didn't cross the street because it was too tired"


def test_attention_widget_runs_the_model_once_sliders_redraw_and_find_heads_matches_the_web_tab(gpt, engine,
                                                                                                  monkeypatch):
    import gpt_demo.inspect.attention as attention

    calls = []
    real = attention.all_attentions
    monkeypatch.setattr(attention, "all_attentions", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    panel = gpt.run_line_magic("gpt_attention", f"--layer 13 --head 0 --token it {SEED}")
    assert WIDGET in panel._repr_mimebundle_() and calls == [SEED]
    n = len(panel.tokens)
    svg = panel.plot.value
    assert "layer 13, head 0" in svg and svg.count("class='cell'") == n * (n + 1) // 2  # the causal half
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    panel.head.value = 8
    assert "layer 13, head 8" in panel.plot.value and panel.plot.value != svg and calls == [SEED]
    expected = engine.attention(SEED, layer=13, head=8).weights  # the Explain tab's core call
    i, j = panel.tokens.index(" it"), panel.tokens.index(" animal")
    assert f"data-i='{i}' data-j='{j}' data-w='{expected[i, j]:.4f}'" in panel.plot.value
    assert "attends most to <b>␣animal</b>" in panel.reading.value
    panel.mean.value = True
    assert "mean over heads" in panel.plot.value and panel.head.disabled
    panel.mean.value = False
    panel.head.value, panel.layer.value = 0, 0
    found = panel.find("it", "animal")
    assert found == engine.strongest_heads(SEED, "it", "animal", k=8)
    assert (panel.layer.value, panel.head.value) == found[0][:2] == (13, 8)  # the sliders jump to the best head
    assert panel.heads_table.value.count("<tr>") == 9
    try:  # the web Explain tab's "Find heads" table, when the web extra is installed
        from gpt_demo.web.explain import find_heads
    except ImportError:
        pass
    else:
        table = find_heads(engine, SEED, "it", "animal")
        assert (int(table["layer"][0]), int(table["head"][0])) == found[0][:2]
    assert panel.find("it", "zebra") == [] and "target=&#x27;zebra&#x27; is not a token" in panel.heads_table.value


def test_attention_heads_grid_and_bad_input(gpt):
    grid = gpt.run_line_magic("gpt_attention", f"--view heads --layer 13 --head 8 {SEED}")
    assert grid.plot.value.count("class='head'") == 9 and "data-layer='13'" in grid.plot.value
    before = grid.plot.value
    grid.layer.value = 3
    assert "data-layer='3'" in grid.plot.value and grid.plot.value != before and grid.renders == 2
    for line, message in [("--layer 99 hi there", "%gpt_attention: layer=99 is out of range; allowed: 0 <= layer < 30"),
                          ("--head 9 hi there", "%gpt_attention: head=9 is out of range; allowed: 0 <= head < 9"),
                          ("--target animal hi", "%gpt_attention: --target needs --token"),
                          ("--view pie hi", "%gpt_attention: argument --view: invalid choice: 'pie'"),
                          ("word " * 70, "%gpt_attention: text has 70 tokens, too long for a heatmap; allowed: at most 64")]:
        result, out = run(gpt, f"%gpt_attention {line}")
        assert isinstance(result.error_in_exec, UsageError), line
        lines = [x for x in out.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and message in lines[0], (line, out.stderr)


# -- %gpt_train ------------------------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    ("", "usage: %gpt_train sft|reward|dpo|ppo"),
    ("xyz data.jsonl --out a", "%gpt_train: kind='xyz' is not allowed; choose one of sft, reward, dpo, ppo"),
    ("sft --out a", "%gpt_train sft: data is missing"),
    ("sft data.jsonl", "%gpt_train sft: --out is missing"),
    ("sft data.jsonl --out a --max-steps 501",
     "%gpt_train sft: max_steps=501 is out of range; allowed: 1 <= max_steps <= 500 (GPT_DEMO_MAX_TRAIN_STEPS)"),
    ("ppo prompts.txt --out a --steps 0", "%gpt_train ppo: steps=0 is out of range"),
    ("sft data.jsonl --out a --lora-r 0", "%gpt_train: lora_r=0 is not allowed; give an integer >= 1"),
    ("sft data.jsonl --out ../x", "%gpt_train: out='../x' is not allowed"),
    ("dpo store --out a --bogus 1", "%gpt_train dpo: unrecognized arguments: --bogus 1"),
])
def test_train_bad_input_is_one_line_and_starts_nothing(shell, line, message):
    result, out = run(shell, f"%gpt_train {line}")
    if line == "":
        assert message in result.result.text
        return
    assert isinstance(result.error_in_exec, UsageError), line
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr


@pytest.mark.slow
def test_train_magic_trains_in_the_background_draws_the_curve_stops_and_writes_the_adapter(gpt, tmp_path):
    from gpt_demo.api import list_adapters

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {a} plus {b}?", "completion": f"{a} plus {b} is {a + b}."})
                            + "\n" for a in range(1, 5) for b in range(1, 3)))
    gpt.user_ns["sft_file"] = str(data)
    flags = "--max-steps 2 --batch-size 2 --max-length 64 --device cpu"
    stopped = gpt.run_line_magic("gpt_train", f"sft {{sft_file}} --out nb-stop {flags}")
    stopped.stop_button.click()  # before the first step: the job ends there
    assert stopped.wait(600) and type(stopped.error).__name__ == "TrainingStopped", stopped.status.value
    assert stopped.status.value == "Stopped: stopped at step 1; run it again with the same --out to resume."
    assert stopped.points == [] and "nb-stop" not in [a.name for a in list_adapters()]

    panel = gpt.run_line_magic("gpt_train", f"sft {{sft_file}} --out nb-sft {flags}")
    assert WIDGET in panel._repr_mimebundle_()
    assert panel.thread.is_alive()  # the magic returned while the job runs: the kernel is free
    result, out = run(gpt, "%gpt_train sft {sft_file} --out nb-sft " + flags)
    assert "%gpt_train: out='nb-sft' is still training; Stop it or choose another --out" in out.stderr
    assert panel.wait(600), "training did not finish"
    assert panel.error is None, panel.status.value
    assert panel.renders >= 2 and "data-n='2'" in panel.curve.value  # two steps, two updates of the curve
    assert sorted({s for s, name, _ in panel.points if name == "loss"}) == [1, 2]
    assert panel.status.value.startswith("Saved <b>sft</b> adapter <b>nb-sft</b>")
    assert "nb-sft" in [a.name for a in list_adapters()] and out.stdout == ""
    assert gpt.run_line_magic("gpt", "config --adapter nb-sft").rows["adapter"] == "nb-sft"


def test_quiet_libraries_nests_across_threads_and_keeps_our_own_warnings():
    import threading
    import warnings

    from gpt_demo.models.quiet import LIBRARIES, quiet_libraries

    def ours_installed() -> bool:
        return any(getattr(f[3], "pattern", None) == LIBRARIES for f in warnings.filters)

    entered, release = threading.Event(), threading.Event()

    def other():
        with quiet_libraries():
            entered.set()
            release.wait(30)

    worker = threading.Thread(target=other)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_libraries():
            worker.start()
            assert entered.wait(30)
        assert ours_installed()  # the other thread is still inside
        warnings.warn_explicit("lib", FutureWarning, "x.py", 1, module="transformers.x")
        warnings.warn_explicit("ours", FutureWarning, "x.py", 1, module="gpt_demo.x")
        release.set()
        worker.join()
        assert not ours_installed()
        warnings.warn_explicit("lib later", FutureWarning, "x.py", 2, module="transformers.x")
    assert [str(w.message) for w in seen] == ["ours", "lib later"]


def test_quiet_libraries_hides_only_library_warnings_and_never_leaks_its_filter():
    import warnings

    from gpt_demo.models.quiet import LIBRARIES, quiet_libraries

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_libraries():  # a %gpt_chat stream or a %gpt_train job holds it for minutes
            for module in ("__main__", "mymod", "mymod.sub", "transformersfan",
                           "transformers.x", "torch", "peft.tuners"):
                warnings.warn_explicit(f"from {module}", UserWarning, "x.py", 1, module=module)
        assert [str(w.message) for w in seen] == ["from __main__", "from mymod", "from mymod.sub",
                                                  "from transformersfan"]
        # another thread inside catch_warnings (transformers' Trainer saving a checkpoint) when the last user leaves
        quiet = quiet_libraries()
        quiet.__enter__()
        inner = warnings.catch_warnings()
        inner.__enter__()  # saves the list holding our filter, works on a copy
        quiet.__exit__(None, None, None)
        inner.__exit__(None, None, None)  # restores the saved list: the filter must not come back with it
        assert not any(getattr(f[3], "pattern", None) == LIBRARIES for f in warnings.filters)
        warnings.warn_explicit("lib after", UserWarning, "x.py", 2, module="transformers.x")
        assert str(seen[-1].message) == "lib after"


# -- gpt-demo jupyter install / uninstall -----------------------------------------------
def test_jupyter_install_autoloads_in_a_real_ipython_and_uninstall_removes_it(tmp_path):
    import os

    from gpt_demo.cli import main

    cfg = tmp_path / "profile_default" / "ipython_config.py"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("c = get_config()\nc.InteractiveShell.autocall = 0\n")
    assert main(["jupyter", "install", "--ipython-dir", str(tmp_path)]) == 0
    assert main(["jupyter", "install", "--ipython-dir", str(tmp_path)]) == 0
    text = cfg.read_text()
    assert text.count('extensions.append("gpt_demo")') == 1 and "autocall = 0" in text
    assert (ROOT / "extensions" / "ipython_config.py").read_text().count('extensions.append("gpt_demo")') == 1
    env = {**os.environ, "IPYTHONDIR": str(tmp_path)}
    probe = "print('MAGICS', 'gpt' in get_ipython().magics_manager.magics['cell'])"
    proc = subprocess.run([sys.executable, "-m", "IPython", "-c", probe], capture_output=True, text=True,
                          timeout=300, env=env)
    assert "MAGICS True" in proc.stdout, proc.stderr
    assert main(["jupyter", "uninstall", "--ipython-dir", str(tmp_path)]) == 0
    assert cfg.read_text() == "c = get_config()\nc.InteractiveShell.autocall = 0\n"
    proc = subprocess.run([sys.executable, "-m", "IPython", "-c", probe], capture_output=True, text=True,
                          timeout=300, env=env)
    assert "MAGICS False" in proc.stdout, proc.stderr


def test_jupyter_help_imports_nothing_heavy():
    code = ("import sys\nfrom gpt_demo.cli import main\ntry:\n    main(['jupyter', 'install', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', [m for m in ('torch', 'IPython', 'ipywidgets') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--ipython-dir" in proc.stdout and "HEAVY []" in proc.stdout, proc.stderr


# -- safe rendering ---------------------------------------------------------------------
class _Executable:
    """What a browser would run or load in an HTML string: script-ish tags, on* handlers, script URLs."""

    TAGS = {"script", "img", "iframe", "svg", "math", "style", "object", "embed", "link", "form", "details", "base"}

    def __init__(self, text: str):
        from html.parser import HTMLParser

        found = self.found = []

        class Parser(HTMLParser):
            def handle_starttag(self, tag, attrs):
                if tag in _Executable.TAGS:
                    found.append(f"<{tag}>")
                for name, value in attrs:
                    if name.startswith("on"):
                        found.append(f"{tag} {name}")
                    if value and name in ("href", "src", "action", "formaction", "data", "xlink:href") and \
                            value.strip().lower().startswith(("javascript:", "vbscript:", "data:", "file:")):
                        found.append(f"{tag} {name}={value}")

        Parser().feed(text)


def _rendered(markdown: str) -> str:
    """The HTML a Markdown renderer that passes raw HTML and every link through (as JupyterLab's marked) makes."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    md.validateLink = lambda url: True
    return md.render(markdown)


@pytest.mark.parametrize("fmt", ["markdown", "code", "text", "json"])
def test_no_executable_html_reaches_the_output_bundle(shell, fmt):
    from test_render import CORPUS

    for payload, _ in CORPUS:
        for done in (True, False):  # the streaming view too
            bundle, _ = shell.display_formatter.format(Answer(payload, fmt, done=done))
            for mime in ("text/html", "text/markdown"):
                if mime in bundle:
                    html = bundle[mime] if mime == "text/html" else _rendered(bundle[mime])
                    assert _Executable(html).found == [], (fmt, payload, mime, bundle[mime])
            if fmt == "markdown":  # the text itself still shows, escaped, not dropped
                assert bundle["text/plain"].startswith(payload)


def test_markdown_answers_escape_html_and_code_cannot_break_out_of_its_fence(shell):
    bundle, _ = shell.display_formatter.format(Answer("<img src=x onerror=alert(1)> costs $5", "markdown"))
    assert bundle["text/markdown"] == "&lt;img src=x onerror=alert(1)> costs \\$5"
    # The answer's own ``` would close a 3-backtick fence and the rest would render as HTML.
    breakout = "```\nx = 1\n```\n<img src=x onerror=alert(1)>\n````` more"
    bundle, _ = shell.display_formatter.format(Answer(breakout, "code", done=False))
    assert bundle["text/markdown"].startswith("``````\n") and bundle["text/markdown"].endswith("\n``````")
    assert _Executable(_rendered(bundle["text/markdown"])).found == []


def test_widgets_show_payloads_as_text():
    from test_render import CORPUS

    from gpt_demo.notebook.views import History, transcript_html
    from gpt_demo.notebook.widgets import RankingPanel

    for payload, _ in CORPUS:
        messages = [{"role": "user", "content": payload}, {"role": "assistant", "content": payload}]
        assert _Executable(transcript_html(messages, pending=payload)).found == []
        assert _Executable(History(messages)._repr_mimebundle_()["text/html"]).found == []
        panel = RankingPanel(payload, [payload, payload], model="m", adapter=None, params={}, session_id="s",
                             open_store=lambda: None)
        for child in panel.children:
            for part in getattr(child, "children", [child]):
                if hasattr(part, "value") and isinstance(part.value, str):
                    assert _Executable(part.value).found == [], payload


# -- %gpt_rank and the store ----------------------------------------------------------------
def test_rank_k_beyond_the_store_range_is_refused_before_generating(shell, monkeypatch):
    from gpt_demo.feedback import MAX_K

    state = state_of(shell)
    monkeypatch.setattr(state, "engine", lambda *a, **k: pytest.fail("generated before checking k"))
    for k in (MAX_K + 1, 8):
        result, out = run(shell, f"%gpt_rank -k {k} hi")
        assert f"%gpt_rank: k={k} is out of range; allowed: 2 <= k <= {MAX_K}" in out.stderr


def test_a_second_panel_with_the_same_ranking_says_already_stored():
    from gpt_demo.feedback import FeedbackStore
    from gpt_demo.notebook.widgets import RankingPanel

    def panel():
        return RankingPanel("Slogan?", ["Fresh daily.", "Bread!"], model="m", adapter=None, params={},
                            session_id="nb", open_store=FeedbackStore.open)

    first = panel().submit([1, 2])
    again = panel()
    assert again.submit([1, 2]) is None
    assert again.status.value == f"Not saved again: this ranking is already stored as #{first}."
    assert FeedbackStore.open().counts() == {"rankings": 1, "pairs": 1}
