"""Raters and admins: the role decision, the serve flags, and the checks over real HTTP with gradio_client.

    .venv/bin/python -m pytest tests/test_web_roles.py -q
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_demo.web.roles import ENABLE_HINT, Access
from gpt_demo.web.serve_config import ServeConfig

RATER, ADMIN = ("ann", "rater-pw"), ("root", "admin-pw")
HINT = "start the app with --admin user:password"


# -- the decision -----------------------------------------------------------------------------

def test_on_your_own_machine_without_logins_everything_is_open():
    access = Access.from_serve(ServeConfig(host="127.0.0.1"))
    assert access.role(None) == "admin" and access.admin_possible and access.locked_note() is None
    assert all(access.allowed(None, a) for a in ("chat", "rank", "vote", "export", "train", "adapters", "paths"))
    assert Access.from_serve(ServeConfig(host="localhost")).role(None) == "admin"


def test_exposed_without_an_admin_anyone_rates_and_export_and_train_are_off():
    for serve in (ServeConfig(host="0.0.0.0"), ServeConfig(share=True), ServeConfig(host="192.168.1.5")):
        access = Access.from_serve(serve)
        assert access.role(None) == "rater" and not access.admin_possible
        assert [access.allowed(None, a) for a in ("chat", "rank", "vote")] == [True, True, True]
        assert [access.allowed(None, a) for a in ("export", "train", "adapters", "paths")] == [False] * 4
        assert access.refusal(None, "export") == (
            f"Export is turned off: this app is exposed to other machines and has no admin. To enable it, {ENABLE_HINT}.")
        assert "`--admin user:password`" in access.locked_note() and "Export and Train" in access.locked_note()


def test_rater_logins_only_lock_export_and_train_even_on_loopback():
    access = Access.from_serve(ServeConfig(auth=["ann:pw", "bob:pw"]))
    assert access.role("ann") == "rater" and access.role("eve") is None and not access.admin_possible
    assert not access.allowed("ann", "train")
    assert access.refusal("ann", "train").startswith("Training is turned off: this app has rater logins only")
    assert HINT in access.refusal("ann", "train")


def test_with_an_admin_raters_are_refused_by_name_and_the_admin_may_do_everything():
    access = Access.from_serve(ServeConfig(host="0.0.0.0", auth="ann:pw", admin="root:pw"))
    assert (access.role("ann"), access.role("root"), access.role("eve")) == ("rater", "admin", None)
    assert access.admin_possible and access.locked_note() is None
    assert access.allowed("ann", "vote") and not access.allowed("ann", "export")
    assert access.refusal("ann", "export") == ("Export needs an admin login; user='ann' is a rater (raters chat, "
                                               "rank and vote). Log in as an admin.")
    assert all(access.allowed("root", a) for a in ("chat", "export", "train", "adapters", "paths"))
    assert access.refusal("eve", "chat") == "Chat needs a login; log in first."
    with pytest.raises(PermissionError, match="Deleting adapters needs an admin login"):
        access.check("ann", "adapters")
    with pytest.raises(ValueError, match="action='fly' is not allowed; choose one of chat, rank"):
        access.allowed("root", "fly")


def test_serve_logins_come_from_the_environment_and_flags_replace_them():
    from gpt_demo.config import Settings

    settings = Settings.from_env({"GPT_DEMO_AUTH": "ann:a1, bob:b2", "GPT_DEMO_ADMIN": "root:r"})
    serve = ServeConfig.from_settings(settings)
    assert serve.credentials == [("ann", "a1"), ("bob", "b2"), ("root", "r")]  # admins log in too
    assert Access.from_serve(serve) == Access(raters=("ann", "bob"), admins=("root",), exposed=False)
    flagged = ServeConfig.from_settings(settings, auth=["cat:c"], admin=["boss:x", "chief:y"])
    assert flagged.credentials == [("cat", "c"), ("boss", "x"), ("chief", "y")]
    assert ServeConfig().credentials is None
    warning = ServeConfig(host="0.0.0.0").warning()
    assert "no password" in warning and "--auth" in warning and "--admin" in warning
    assert ServeConfig(host="0.0.0.0", admin="root:r").warning() is None


def test_a_malformed_or_repeated_login_is_named():
    with pytest.raises(ValueError, match=r"^admin='root' is not allowed; give user:password with both parts"):
        ServeConfig(admin=["root"])
    with pytest.raises(ValueError, match=r"^auth=':pw' is not allowed"):
        ServeConfig(auth=("ann:a", ":pw"))
    with pytest.raises(ValueError, match=r"^admin='ann:other' is not allowed; user 'ann' is already given by --auth"):
        ServeConfig(auth="ann:a", admin="ann:other")


def test_the_serve_flags_repeat_and_their_errors_name_the_value(gpt_demo_home):
    for argv, message in ((["--admin", "rootonly"], "admin='rootonly' is not allowed; give user:password"),
                          (["--auth", "a:b", "--auth", "c"], "auth='c' is not allowed; give user:password"),
                          (["--auth", "a:b", "--admin", "a:c"], "admin='a:c' is not allowed; user 'a' is already")):
        proc = subprocess.run([sys.executable, "-m", "gpt_demo", "serve", *argv], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and f"gpt-demo serve: error: {message}" in proc.stderr, proc.stderr
    helped = subprocess.run([sys.executable, "-m", "gpt_demo", "serve", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert "--admin USER:PASSWORD" in helped.stdout and "repeatable" in helped.stdout


def test_the_gradio_wrapper_keeps_the_handlers_parameters():
    pytest.importorskip("gradio")
    import gradio as gr

    from gpt_demo.web.roles import AccessHolder, gradio_fn

    def handler(kind, steps, progress=gr.Progress()):
        yield kind, steps

    wrapped = gradio_fn(handler, AccessHolder(Access()), "train")
    assert list(inspect.signature(wrapped).parameters) == ["request", "kind", "steps", "progress"]
    assert inspect.isgeneratorfunction(wrapped)
    assert list(wrapped(None, "sft", 3)) == [("sft", 3)]  # open on loopback: no request needed
    locked = gradio_fn(handler, AccessHolder(Access(exposed=True)), "train")
    with pytest.raises(gr.Error, match="Training is turned off: this app is exposed"):
        list(locked(None, "sft", 3))


# -- over HTTP ---------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path, engine):
    from gpt_demo.config import Settings
    from gpt_demo.feedback import FeedbackStore

    store = FeedbackStore.open(Settings.from_env())  # the store under $GPT_DEMO_HOME, which training reads
    store.add_ranking("Say hi", ["Hi!", "Go away."], [1, 2], model=engine.model_name)
    return store


def _more_rankings(store, engine):
    for topic in ["the weather", "my homework", "a recipe", "the train times", "a movie"]:
        store.add_ranking(f"Can you help me with {topic}?",
                          [f"Of course! I'd be glad to help with {topic}.", "No. Figure it out yourself."], [1, 2],
                          model=engine.model_name)


def _serve(engine, store, serve):
    from gpt_demo.config import Settings
    from gpt_demo.limits import Limits
    from gpt_demo.web.app import build_app, launch

    settings = Settings.from_env(device="cpu", offline=True, limits=Limits(max_train_steps=40))
    app = build_app(engine, store=store, settings=settings, serve=serve)
    return app, launch(app, serve, block=False, quiet=True)


@pytest.mark.slow
def test_over_http_raters_are_refused_export_and_train_and_an_admin_is_not(engine, store, tmp_path):
    pytest.importorskip("gradio")
    import httpx
    from gradio_client import Client
    from gradio_client.exceptions import AppError, AuthenticationError

    app, url = _serve(engine, store, ServeConfig(port=0, auth=[":".join(RATER)], admin=[":".join(ADMIN)]))
    try:
        # Strangers get the login refusal: 401 on the config and on the queue, and the client says so.
        assert httpx.get(f"{url}config").status_code == 401
        assert httpx.post(f"{url}gradio_api/queue/join", json={}).status_code == 401
        with pytest.raises(AuthenticationError, match="credentials were not provided. Please login"):
            Client(url, verbose=False)
        wrong = httpx.post(f"{url}login", data={"username": "ann", "password": "wrong"})
        assert (wrong.status_code, wrong.json()["detail"]) == (400, "Incorrect credentials.")
        with pytest.raises(ValueError, match=r"^Could not login to http://127\.0\.0\.1:\d+/\.$"):
            Client(url, auth=("ann", "wrong"), verbose=False)

        rater = Client(url, auth=RATER, verbose=False)
        with pytest.raises(AppError, match=r"^Export needs an admin login; user='ann' is a rater"):
            rater.predict("jsonl", api_name="/export_pairs")
        with pytest.raises(AppError, match=r"^Training needs an admin login; user='ann' is a rater"):
            rater.predict("reward", "rankings store", None, "rater-rm", 2, 5e-4, 0.1, None, api_name="/train")
        with pytest.raises(AppError, match=r"^Deleting adapters needs an admin login; user='ann'"):
            rater.predict("anything", api_name="/delete_adapter")
        # Raters still rank, and the stats they get do not show the store's path.
        status, stats = rater.predict("load r0", 2, "first", "second", "", "", "", "", "1", "2", None, None, None,
                                      None, api_name="/rank_submit")
        assert status.startswith("Stored ranking #") and str(store.path) not in stats
        assert not (Path(store.path).parent / "adapters").exists()

        admin = Client(url, auth=ADMIN, verbose=False)
        exported = admin.predict("jsonl", api_name="/export_pairs")
        rows = [json.loads(line) for line in Path(exported).read_text().splitlines()]
        assert {"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away."} in rows and len(rows) == 2
        with pytest.raises(AppError, match=r"^Value 41 is greater than maximum value 40\.$"):  # max_train_steps
            admin.predict("reward", "rankings store", None, "admin-rm", 41, 5e-4, 0.1, None, api_name="/train")
        _more_rankings(store, engine)
        job = admin.submit("reward", "rankings store", None, "admin-rm", 2, 5e-4, 0.1, None, api_name="/train")
        job.result()  # raises the job's error, if any
        updates = job.outputs()
        assert updates[-1][0].startswith("Saved **reward** adapter **admin-rm**"), updates[-1][0]
        with pytest.raises(AppError, match=r"^Deleting adapters needs an admin login"):
            rater.predict("admin-rm", api_name="/delete_adapter")
        assert admin.predict("admin-rm", api_name="/delete_adapter") == "Deleted adapter **admin-rm**."
    finally:
        app.close()


def test_over_http_exposed_without_an_admin_export_and_train_are_off_and_the_page_says_how(engine, store):
    pytest.importorskip("gradio")
    import httpx
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    serve = ServeConfig(host="0.0.0.0", port=0)  # bound on every interface; this test talks to 127.0.0.1 only
    app, url = _serve(engine, store, serve)
    local = url.replace("0.0.0.0", "127.0.0.1")
    try:
        client = Client(local, verbose=False)
        with pytest.raises(AppError, match=r"^Export is turned off: this app is exposed to other machines and has no "
                                           r"admin\. To enable it, start the app with --admin user:password"):
            client.predict("jsonl", api_name="/export_pairs")
        with pytest.raises(AppError, match=r"^Training is turned off: this app is exposed"):
            client.predict("reward", "rankings store", None, "x-rm", 2, 5e-4, 0.1, None, api_name="/train")
        config = httpx.get(f"{local}config").json()
        by_id = {c.get("props", {}).get("elem_id"): c["props"] for c in config["components"]}
        assert by_id["rank-export"]["interactive"] is False and by_id["train-start"]["interactive"] is False
        for note in ("rank-export-note", "train-locked"):
            assert "start the app with `--admin user:password`" in by_id[note]["value"]
        assert str(store.path) not in json.dumps(config)  # no path on the page
    finally:
        app.close()


def test_over_http_an_open_loopback_app_exports_without_a_login(engine, store):
    pytest.importorskip("gradio")
    from gradio_client import Client

    app, url = _serve(engine, store, ServeConfig(port=0))
    try:
        exported = Client(url, verbose=False).predict("jsonl", api_name="/export_pairs")
        assert len(Path(exported).read_text().splitlines()) == 1
    finally:
        app.close()


def test_only_admins_are_shown_the_store_path(store):
    pytest.importorskip("gradio")
    from gpt_demo.web import rank

    access = Access(raters=("ann",), admins=("root",), exposed=True)
    button, note, path = rank.access_updates(store, access, "ann")
    assert button["interactive"] is False and "needs an admin login" in note["value"] and path["value"] == ""
    button, note, path = rank.access_updates(store, access, "root")
    assert button["interactive"] is True and note["visible"] is False and str(store.path) in path["value"]
    assert str(store.path) not in rank.stats_text(store)


@pytest.mark.browser
def test_in_the_browser_a_rater_sees_export_off_and_an_admin_sees_it_on_with_the_path(engine, store):
    pytest.importorskip("gradio")
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run does it)")
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    app, url = _serve(engine, store, ServeConfig(port=0, auth=[":".join(RATER)], admin=[":".join(ADMIN)]))
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=args)
            try:
                for (user, password), role in ((RATER, "rater"), (ADMIN, "admin")):
                    page = browser.new_context().new_page()
                    page.goto(url)
                    page.get_by_label("username").fill(user)
                    page.get_by_label("password").fill(password)
                    page.get_by_role("button", name="Login").click()
                    page.get_by_role("tab", name="Rank").click(timeout=60_000)
                    button = page.locator("button#rank-export")
                    if role == "rater":  # the page-load event turns them off for this user
                        sync_api.expect(page.locator("#rank-export-note")).to_contain_text(
                            "Export needs an admin login; user='ann' is a rater", timeout=30_000)
                        sync_api.expect(button).to_be_disabled()
                        assert str(store.path) not in page.content()
                    else:
                        sync_api.expect(page.locator("#rank-store-path")).to_contain_text(str(store.path),
                                                                                            timeout=30_000)
                        sync_api.expect(button).to_be_enabled()
                    page.get_by_role("tab", name="Train").click()
                    start = page.locator("button#train-start")
                    if role == "rater":
                        sync_api.expect(page.locator("#train-locked")).to_contain_text(
                            "Training needs an admin login", timeout=30_000)
                        sync_api.expect(start).to_be_disabled()
                    else:
                        sync_api.expect(start).to_be_enabled(timeout=30_000)
                    page.close()
            finally:
                browser.close()
    finally:
        app.close()
