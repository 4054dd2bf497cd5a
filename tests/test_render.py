"""Safe rendering: the core escaping (``gpt_demo.text_safety``) and the chat in a real Chromium.

    .venv/bin/python -m pytest tests/test_render.py -q            # the browser part needs /usr/bin/chromium

The browser test uses a reply stub (it echoes the user's text as the model's answer), so
every payload reaches the page both as user text and as model output; it tests rendering
only, which is why no model is loaded for it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from gpt_demo.text_safety import GRADIO_LATEX, WJ, code_fence, escape_markdown_html, markdown_to_safe_html

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
EVIL = "https://evil.example"

# (payload, text that must stay visible in the chat). Classic filter evasion (OWASP's cheat sheet),
# the Markdown forms of the same attacks, and the places where Markdown parsers disagree.
CORPUS = [
    ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),
    ("<svg onload=alert(2)>", "<svg onload=alert(2)>"),
    ("<script>alert(3)</script>", "<script>alert(3)</script>"),
    ('<iframe srcdoc="<script>alert(4)</script>"></iframe>', "<iframe srcdoc="),
    ('<a href="javascript:alert(5)">click5</a>', "click5</a>"),
    ("<IMG SRC=JaVaScRiPt:alert(6)>", "<IMG SRC=JaVaScRiPt"),
    ("<ImG sRc=x OnErRoR=alert(7)>", "OnErRoR=alert(7)"),
    ("<img src=x onerror=&#97;&#108;&#101;&#114;&#116;(8)>", "onerror=&#97;&#108;"),
    ("<img src=x one\x00rror=alert(9)>", "rror=alert(9)"),
    ("<img src=x onerror=alert(10)", "onerror=alert(10)"),
    ("<style>body{background:url(" + EVIL + "/11.png)}</style>", "<style>body{background"),
    ('<math><mtext><table><mglyph><style><img src=x onerror=alert(12)>', "<math><mtext>"),
    ("<details open ontoggle=alert(13)>", "ontoggle=alert(13)"),
    ("[click14](javascript:alert(14))", "click14"),
    ("[click15](JaVaScRiPt:alert(15))", "click15"),
    ("[click16](jav&#x61;script:alert(16))", "click16"),
    ("[click17](javascript\\:alert(17))", "click17"),
    ("<javascript:alert(18)>", "<javascript"),
    ("[click19][r19]\n\n[r19]: javascript:alert(19)", "click19"),
    ("[click20](data:text/html;base64,PHNjcmlwdD5hbGVydCgyMCk8L3NjcmlwdD4=)", "click20"),
    ("![pic21](" + EVIL + "/21.png)", "pic21"),
    ("![pic22](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMjIpPg==)", "pic22"),
    ("![pic23][r23]\n\n[r23]: " + EVIL + "/23.png", "pic23"),
    ("`a\n\n<img src=x onerror=alert(24)>\n\n`", "onerror=alert(24)"),  # a blank line ends a code span
    ("`` `<img src=x onerror=alert(25)>` ``", "onerror=alert(25)"),  # nested backticks
    ("```\n```~\n<img src=" + EVIL + "/26.png>\n```", "26.png"),  # marked closes a fence at ```~
    ("```mermaid\n<img src=" + EVIL + "/27.png onerror=alert(27)>\n```", "27.png"),  # gradio's raw mermaid block
    ("$$ ` $$ <img src=" + EVIL + "/28.png> `", "28.png"),  # gradio pulls $$..$$ out before Markdown
    ("http://a.example/` <img src=" + EVIL + "/29.png onerror=alert(29)>`", "29.png"),  # marked's URL literal
    ("| ` | `<img src=" + EVIL + "/30.png onerror=alert(30)>` |\n|---|---|", "30.png"),  # GFM table cells
    ("- item\n\n      <img src=" + EVIL + "/31.png onerror=alert(31)>", "31.png"),  # code in a list
    ("> ```\n> <img src=" + EVIL + "/32.png onerror=alert(32)>\n> ```", "32.png"),  # a fence in a quote
    ("<!-- x --><img src=x onerror=alert(33)>", "onerror=alert(33)"),
    ('<object data="javascript:alert(34)">', "<object data="),
    ("<link rel=stylesheet href=" + EVIL + "/35.css>", "35.css"),
    ("<form action=javascript:alert(36)><button>go36</button></form>", "go36"),
    ("```html\n<b>bold37</b>\n```", "<b>bold37</b>"),  # a real code block shows its HTML as code
]
BAD_HREF = re.compile(r"^\s*(javascript|vbscript|data|file):", re.I)


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 30 and len({p for p, _ in CORPUS}) == len(CORPUS)


def test_the_blank_line_case_is_escaped():
    # Was returned unchanged: the old code-span regex matched across the blank lines.
    text = "`a\n\n<img src=x onerror=alert(1)>\n\n`"
    assert escape_markdown_html(text) == "`a\n\n&lt;img src=x onerror=alert(1)>\n\n`"


def test_code_keeps_its_look_and_no_tag_survives_outside_robust_fences():
    assert escape_markdown_html("```html\n<b>x</b>\n```") == "````html\n<b>x</b>\n````"
    assert escape_markdown_html("```py\nprint('<b>')") == "````py\nprint('<b>')\n````"  # unclosed: closed
    assert escape_markdown_html("`<b>` and <b>") == f"`<{WJ}b>` and &lt;b>"
    assert escape_markdown_html("```\nhas ```` inside\n```") == "`````\nhas ```` inside\n`````"
    for payload, _ in CORPUS:
        out = escape_markdown_html(payload)
        outside = re.sub(r"^(`{4,})[^\n]*\n[\s\S]*?^\1$", "", out, flags=re.M)  # drop the top-level fences
        assert not re.search(r"<[A-Za-z/!?]", outside), (payload, out)
        assert not re.search(r"(?<!\\)!\[", outside), (payload, out)
        assert not re.search(r"(?i)(java|vb)script\\?:|data\\?:|file\\?:", out), (payload, out)


def test_links_and_images_are_neutralised():
    assert escape_markdown_html("[x](javascript:alert(1))") == f"[x](javascript{WJ}:alert(1))"
    assert escape_markdown_html("[x](jav&#x61;script:alert(1))") == "[x](jav&amp;#x61;script:alert(1))"
    assert escape_markdown_html("![x](https://evil.example/a.png)") == "\\![x](https://evil.example/a.png)"
    assert escape_markdown_html("\\![x](y)") == "\\![x](y)"  # already escaped: not doubled into \\ + image
    assert escape_markdown_html("vec![1]") == "vec\\![1]"


def test_latex_regions_are_located_as_gradio_does():
    import inspect

    gr = pytest.importorskip("gradio")
    chatbot = gr.Chatbot()  # the Chat tab keeps gradio's default delimiters
    assert tuple((d["left"], d["right"]) for d in chatbot.latex_delimiters) == GRADIO_LATEX
    assert "latex_delimiters" not in inspect.getsource(__import__("gpt_demo.web.chat", fromlist=["build"]).build)
    # Inside $$..$$ gradio escapes the text itself, so it is left as written ...
    assert escape_markdown_html("$$a < b & c$$ <i>") == "$$a < b & c$$ &lt;i>"
    # ... and a region that swallows a fence's opening makes the fence's body prose.
    assert "&lt;img" in escape_markdown_html("$$\n````\n$$\n<img src=x>\n````")


def test_dollar_escaping_for_the_notebook():
    assert escape_markdown_html("cost $5, `$x` and $6", latex_delimiters=(), escape_dollars=True) == \
        "cost \\$5, `$x` and \\$6"
    with pytest.raises(ValueError, match="escape_dollars=True is not allowed with latex_delimiters"):
        escape_markdown_html("x", escape_dollars=True)


def test_code_fence_is_longer_than_any_backtick_run():
    assert code_fence("a ``` b ````` c") == "``````\na ``` b ````` c\n``````"
    assert code_fence("plain", "py") == "```py\nplain\n```"


def test_safe_html_has_no_script_handler_or_image():
    for payload, _ in CORPUS:
        out = markdown_to_safe_html(payload)
        assert not re.search(r"<(script|img|svg|iframe|style|math|details|object|link|form)\b", out, re.I), out
        assert not re.search(r"<[^>]*\son\w+\s*=", out, re.I), out
        assert not re.search(r"(?i)(java|vb)script:|data:|file:", out), out
    assert '<a href="https://ok.example">ok</a>' in markdown_to_safe_html("[ok](https://ok.example)")


def test_the_web_renders_the_conversation_escaped():
    from gpt_demo.chat import Conversation
    from gpt_demo.web.render import chat_messages

    conv = Conversation()
    conv.add("user", "<img src=x onerror=alert(1)>")
    assert chat_messages(conv) == [{"role": "user", "content": "&lt;img src=x onerror=alert(1)>"}]


# -- in the browser -------------------------------------------------------------------------
class EchoEngine:
    """A reply stub: answers with the user's last message, in three chunks. For rendering tests only."""

    model_name = "echo-stub"
    context_window = 2048
    backend = "echo"

    def __init__(self):
        from gpt_demo.backends.capabilities import Capabilities
        from gpt_demo.generation.params import GenerationParams

        self.defaults = GenerationParams()
        self.capabilities = Capabilities(logprobs=False, score=False)  # Show probabilities says it has none

    def render_chat(self, conv, params):
        return SimpleNamespace(truncated=False, note="")

    def _text(self, messages):
        turns = getattr(messages, "turns", messages)
        return [t for t in turns if t["role"] == "user"][-1]["content"]

    def stream_chat(self, messages, params):
        text = self._text(messages)
        third = max(1, len(text) // 3)
        yield from (text[i:i + third] for i in range(0, len(text), third))

    def chat(self, messages, params):
        return SimpleNamespace(text=self._text(messages))


@pytest.fixture(scope="module")
def echo_app():
    gr = pytest.importorskip("gradio")
    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    from gpt_demo.web import chat
    from gpt_demo.web.app import launch
    from gpt_demo.web.serve_config import ServeConfig
    from gpt_demo.web.session import new_session

    with gr.Blocks(analytics_enabled=False) as app:
        state = gr.State(new_session)
        chat.build(EchoEngine(), state, 1)  # the real Chat tab, over the stub
    url = launch(app, ServeConfig(port=0), block=False, quiet=True)
    yield url
    app.close()


@pytest.mark.browser
def test_xss_corpus_in_the_browser_runs_nothing_and_loads_nothing(echo_app):
    from playwright.sync_api import sync_playwright

    hosts, dialogs = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})

        def route(r):
            host = urlsplit(r.request.url).hostname or r.request.url.split(":", 1)[0]
            hosts.append((host, r.request.url))
            return r.continue_() if host == "127.0.0.1" else r.abort()

        page.route("**/*", route)  # before navigation: every request the page makes is seen
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.add_init_script("window.__ran = []; for (const f of ['alert', 'confirm', 'prompt', 'print'])"
                             " { const o = window[f]; window[f] = (...a) => { window.__ran.push(f + ':' + a); "
                             "return o.apply(window, a); }; }")
        page.goto(echo_app)
        page.wait_for_selector("#chat-input textarea", timeout=60_000)
        for i, (payload, _) in enumerate(CORPUS):
            page.fill("#chat-input textarea", payload)
            page.click("#chat-send")
            # Two messages per payload: the user's and the stub's echo, finished when Send is enabled again.
            page.wait_for_function("(n) => document.querySelectorAll('#chatbot .message-row').length >= n",
                                   arg=2 * (i + 1), timeout=30_000)
        page.wait_for_function("() => !document.querySelector('#chatbot .pending, #chatbot .generating')",
                               timeout=30_000)
        page.wait_for_timeout(1000)  # images and handlers would fire now; nothing may
        text = page.locator("#chatbot").inner_text()
        bad = page.evaluate("""() => {
            const out = [];
            for (const el of document.querySelectorAll('#chatbot *')) {
                for (const a of el.attributes) {
                    if (/^on/i.test(a.name)) out.push(el.tagName + ' ' + a.name);
                    if (/^(href|src|xlink:href|action|formaction|data|srcdoc)$/i.test(a.name)
                        && /^\\s*(javascript|vbscript|data|file):/i.test(a.value)) out.push(el.tagName + ' ' + a.value);
                }
            }
            // gradio's own markup is allowed: copy buttons' icons, KaTeX's MathML for $$..$$.
            for (const el of document.querySelectorAll('#chatbot .message-content *')) {
                if (/^(script|img|iframe|style|math|details|object|embed|link|form|input|video|audio|base|meta)$/i
                    .test(el.tagName) && !el.closest('button, .katex')) out.push('<' + el.tagName + '>');
                if (el.tagName.toLowerCase() === 'svg' && !el.closest('button, .katex')) out.push('<svg>');
            }
            return out;
        }""")
        ran = page.evaluate("window.__ran")
        rows = page.locator("#chatbot .message-row").count()
        browser.close()
    assert dialogs == [] and ran == []
    assert [url for host, url in hosts if host != "127.0.0.1"] == []
    assert bad == []
    assert rows == 2 * len(CORPUS)
    flat = " ".join(text.replace(WJ, "").split())
    for payload, visible in CORPUS:
        # Each payload shows as text twice: as the user's message and as the stub's answer.
        assert flat.count(" ".join(visible.split())) >= 2, (payload, visible)
