"""The gpt-demo command line (the layering rule is tests/test_layering.py).

    .venv/bin/python -m pytest tests/test_cli.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpt_demo.cli import main


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_help_does_not_import_torch():
    proc = run_python(
        "import sys\nfrom gpt_demo.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy', 'gradio', 'IPython') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    assert "usage: gpt-demo" in proc.stdout
    assert "HEAVY []" in proc.stdout


def test_the_front_ends_share_one_flag_table():
    """gpt_demo.flags is the one table: the CLI, `gpt-demo serve` and the notebook magics read it."""
    from gpt_demo import flags
    from gpt_demo.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    generate = {a.option_strings[0]: a for a in commands["generate"]._actions if a.option_strings}
    for flag, (dest, _, text) in flags.PARAM_FLAGS.items():
        assert generate[flag].dest == dest and generate[flag].help == text
    serve = {o for a in commands["serve"]._actions for o in a.option_strings}
    assert {"--model", "--quantize", "--device", "--adapter", "--reward-model"} <= serve
    pytest.importorskip("IPython")
    from gpt_demo.notebook import parsing

    assert parsing.PARAM_FLAGS and all(parsing.PARAM_FLAGS[f] is flags.PARAM_FLAGS[f] for f in parsing.PARAM_FLAGS)
    with pytest.raises(ValueError, match=r"--threshold 'violence' is not allowed; write CATEGORY=NUMBER"):
        flags.parse_thresholds(["violence"])
    assert flags.parse_thresholds(["violence=0.3", " hate =1"]) == {"violence": 0.3, "hate": 1.0}


def test_console_script_answers_a_question():
    exe = [sys.executable, "-m", "gpt_demo"]
    proc = subprocess.run(
        exe + ["generate", "What is the capital of France?", "--temperature", "0", "--max-tokens", "16"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


@pytest.mark.parametrize(
    "argv, field",
    [
        (["generate", "hi", "--temperature", "3"], "temperature=3.0"),
        (["generate", "hi", "--top-p", "0"], "top_p=0.0"),
        (["generate", "hi", "--best-of", "1", "--n", "2"], "best_of=1"),
        (["generate", "hi", "--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e"], "stop="),
        (["next-tokens", "hi", "--temperature", "-1"], "temperature=-1.0"),
        (["generate", "hi", "--model", "no-such-model"], "model='no-such-model'"),
    ],
)
def test_bad_input_is_one_clear_line(argv, field, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert field in err and "error" in err and "Traceback" not in err


def test_generate_json_and_raw(capsys):
    assert main(["generate", "The capital of France is", "--raw", "--json", "--temperature", "0", "--max-tokens", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["choices"][0]["text"].strip() and result["usage"]["completion_tokens"] <= 5
    assert result["model"] == "smollm2-135m-instruct"


def test_generate_reads_stdin(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?"))
    assert main(["generate", "--temperature", "0", "--max-tokens", "16"]) == 0
    assert "Paris" in capsys.readouterr().out


def test_next_tokens_table_is_sorted(capsys):
    assert main(["next-tokens", "The best thing about AI is its ability to", "--top-k", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    probs = [r["prob"] for r in rows]
    assert len(rows) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1


def test_chat_reads_turns_from_a_pipe_and_keeps_history(monkeypatch, capsys):
    import io

    from gpt_demo.api import Engine

    seen = []
    real_stream = Engine.stream_chat

    def recording_stream(self, conv, *args, **kwargs):  # the real model still answers
        seen.append(conv.messages)
        return real_stream(self, conv, *args, **kwargs)

    monkeypatch.setattr(Engine, "stream_chat", recording_stream)
    turns = "My name is Ada.\n/system Answer in one short sentence.\nWhat is my name?\n/exit\nignored\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(turns))
    assert main(["chat", "--temperature", "0", "--max-tokens", "24"]) == 0
    out = capsys.readouterr()
    assert len(seen) == 2  # '/exit' ended the chat before 'ignored'
    first, second = seen
    assert first == [{"role": "user", "content": "My name is Ada."}]
    assert second[0] == {"role": "system", "content": "Answer in one short sentence."}
    assert second[1] == first[0] and second[2]["role"] == "assistant" and second[2]["content"] in out.out
    assert second[3] == {"role": "user", "content": "What is my name?"}


def test_models_lists_the_default(capsys):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["models"][0]["name"] == "smollm2-135m-instruct"
    assert listing["models"][0]["packaged_gguf"].endswith(".gguf")
