"""The quickstart notebook in a real JupyterLab, driven by Playwright in Debian's Chromium.

    .venv/bin/python -m pytest tests/test_jupyterlab.py -q      # screenshots go to docs/screenshots/notebook-*.png

One run of every cell, as a user would click Run All, then: a chat in the ``%gpt_chat`` widget
(Enter sends, the reply streams), a hover on a ``--probs`` token (its alternatives show), the
attention head slider (the heatmap changes), the ``%gpt_train`` curve, and no traceback or
warning in any output. The notebook is then saved and its outputs are checked as files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from servers import stop_process

pytest.importorskip("jupyterlab")
pytest.importorskip("ipywidgets")
nbformat = pytest.importorskip("nbformat")
playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "docs" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
WIDGET = "application/vnd.jupyter.widget-view+json"
# JupyterLab's settings for the run: every cell stays in the DOM (no virtual scrolling), no news fetch.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll the server's status API until it answers (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)  # polling a condition, not ordering events
    raise TimeoutError(f"jupyter lab did not answer {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def lab(engine, tmp_path_factory, session_home):
    """``jupyter lab`` on a free port, with a temporary root, token, settings and IPython dir."""
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run does it)")
    base = tmp_path_factory.mktemp("jupyterlab")
    root, settings = base / "root", base / "settings"
    root.mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.ipynb", root / "quickstart.ipynb")
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    home = base / "home"
    home.mkdir()
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)  # the converted model, once
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "GPT_DEMO_HOME": str(home), "IPYTHONDIR": str(base / "ipython"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTER_CONFIG_DIR": str(base / "config"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
                             "--allow-root", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "root": root, "home": home, "log": base / "lab.log"}
    finally:
        stop_process(proc, log)


def _cell(page, source_start: str):
    """The notebook cell whose source starts with ``source_start``."""
    return page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea-editor", has_text=source_start)).first


ALL_RUN = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim());
  return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
}"""


def test_quickstart_in_jupyterlab_streams_hovers_slides_trains_and_shows_no_warning(lab):
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{lab['url']}/lab/tree/quickstart.ipynb?token={lab['token']}")
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
        expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=120_000)

        expect(page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"Python 3.*\| Idle"))).to_have_count(
            1, timeout=120_000)
        first_prompt = page.locator(".jp-CodeCell .jp-InputArea-prompt").first
        for _ in range(5):  # a click that lands while the kernel session is still being attached does nothing
            page.locator(".jp-CodeCell").first.click()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name=re.compile("^Run All Cells")).click()
            try:
                expect(first_prompt).not_to_have_text("[ ]:", timeout=20_000)
                break
            except AssertionError:
                continue
        try:
            page.wait_for_function(ALL_RUN, timeout=480_000, polling=500)
        except playwright.TimeoutError:  # say where it stuck: the prompts, any dialog, the server's log
            page.screenshot(path=str(lab["log"].with_suffix(".png")), full_page=True)
            prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
            dialogs = page.locator(".jp-Dialog").all_inner_texts()
            pytest.fail(f"not every cell ran: prompts {prompts}, dialogs {dialogs}, server log:\n"
                        f"{lab['log'].read_text()[-3000:]}")
        expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=120_000)

        # -- the chat widget: Enter sends, the reply streams (the widget's own marker shows while it grows)
        chat = _cell(page, "%gpt_chat")
        chat.scroll_into_view_if_needed()
        box = chat.locator("input[placeholder='Type a message and press Enter']")
        page.evaluate("""(el) => {
          window.__snaps = []; window.__streamed = false;
          new MutationObserver(() => {
            const s = el.querySelector('.gd-streaming');
            if (s) { window.__streamed = true; window.__snaps.push(s.textContent.length); }
          }).observe(el, {subtree: true, childList: true, characterData: true});
        }""", chat.locator(".jp-OutputArea").element_handle())
        box.fill("What is the capital of France?")
        box.press("Enter")
        page.wait_for_function("() => window.__streamed", timeout=120_000)
        expect(chat.locator(".gd-streaming")).to_have_count(0, timeout=120_000)
        reply = chat.locator(".widget-html-content div").filter(has_text=re.compile("^assistant:")).last
        expect(reply).to_contain_text(re.compile(r"assistant: \S+"))
        snaps = page.evaluate("window.__snaps")
        assert len(snaps) >= 1 and snaps == sorted(snaps), snaps  # the streaming bubble only grew
        assert box.input_value() == ""
        chat.screenshot(path=str(SCREENSHOTS / "notebook-chat.png"))

        # -- --probs: hovering a token shows its top-5 alternatives
        probs = _cell(page, "%%gpt --probs")
        probs.scroll_into_view_if_needed()
        token = probs.locator(".gd-tok").nth(1)
        alternatives = token.locator(".gd-alt")
        expect(alternatives).to_be_hidden()
        token.hover()
        expect(alternatives).to_be_visible()
        expect(alternatives.locator("tr")).to_have_count(5)
        expect(alternatives).to_contain_text("%")
        background = token.evaluate("el => getComputedStyle(el).backgroundColor")
        assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background  # coloured by its probability
        box_ = probs.bounding_box()  # the popup hangs below the cell: take it in too
        page.screenshot(path=str(SCREENSHOTS / "notebook-probs.png"),
                        clip={"x": box_["x"], "y": box_["y"], "width": box_["width"], "height": box_["height"] + 90})

        # -- attention: the head slider redraws the heatmap (the "it" -> "animal" head was found)
        attention = _cell(page, "%gpt_attention --layer 13")
        attention.scroll_into_view_if_needed()
        title = attention.locator("svg.gd-attention text").first
        expect(title).to_have_text("layer 13, head 8")
        best = attention.locator("table.gd-found-heads tbody tr").first.locator("td")
        expect(best).to_have_text(["13", "8", re.compile(r"0\.\d{3}")])  # "it" -> "animal": the web tab's head
        before = attention.locator("svg.gd-attention").inner_html()
        head_slider = attention.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=re.compile("^head$")))
        head_slider.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowLeft")
        expect(title).to_have_text("layer 13, head 7")
        assert attention.locator("svg.gd-attention").inner_html() != before
        attention.screenshot(path=str(SCREENSHOTS / "notebook-attention.png"))
        grid = _cell(page, "%gpt_attention --view heads")
        expect(grid.locator("svg.gd-heads g.head")).to_have_count(9)
        grid.screenshot(path=str(SCREENSHOTS / "notebook-heads.png"))

        # -- training: two steps drew the curve twice, then the adapter was saved
        train = _cell(page, "job = %gpt_train")
        train.scroll_into_view_if_needed()
        expect(train.locator(".gd-curve g.metric[data-metric='loss']")).to_have_attribute("data-n", "2")
        expect(train).to_contain_text("Saved sft adapter quickstart-sft")
        train.screenshot(path=str(SCREENSHOTS / "notebook-train.png"))

        # -- no output anywhere is a traceback, an error or a warning (stderr streams included)
        stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        assert stderr == [], stderr
        texts = page.locator(".jp-OutputArea-output").all_inner_texts()
        noisy = [t for t in texts if re.search(r"Traceback|Error|Warning|warn\(", t)]
        assert noisy == [], noisy

        page.keyboard.press("Control+s")
        expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=30_000)
        browser.close()

    assert (lab["home"] / "adapters" / "quickstart-sft").is_dir()
    nb = nbformat.read(lab["root"] / "quickstart.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert [o for c in code for o in c.outputs if o.output_type == "error" or o.get("name") == "stderr"] == []
    tagged = lambda tag: [c for c in code if tag in c.metadata.get("tags", [])]  # noqa: E731
    for cell in tagged("chat"):
        answers = [o.data["text/markdown"] for o in cell.outputs if "text/markdown" in o.get("data", {})]
        assert answers and answers[-1].strip(" `\n"), cell.source
    for cell in tagged("widget"):
        assert any(WIDGET in o.get("data", {}) for o in cell.outputs), cell.source
    outs = {c.source: c for c in code}
    assert "Paris" in json.dumps(outs["answer"].outputs[0]["data"]["text/plain"])
    assert "('I want to kill him', True)" in \
        outs['[(v["text"], v["flagged"]) for v in verdicts]'].outputs[0]["data"]["text/plain"]
    assert "(True, 'quickstart-sft')" in outs["job.wait(), job.result.name"].outputs[0]["data"]["text/plain"]
    assert len(tagged("chat")) == 5 and len(tagged("widget")) == 7
