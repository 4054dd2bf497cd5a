"""The web app (what `make run` and a Hugging Face Space run): python app.py

Host, port, logins and model come from GPT_DEMO_HOST / GPT_DEMO_PORT / GPT_DEMO_AUTH (raters) /
GPT_DEMO_ADMIN (admins) / GPT_DEMO_MODEL; `gpt-demo serve --help` has the same as flags.
"""
from gpt_demo.api import load_engine
from gpt_demo.web.app import build_app, launch
from gpt_demo.web.serve_config import ServeConfig

serve = ServeConfig.from_settings()
app = build_app(load_engine(), serve=serve)

if __name__ == "__main__":
    launch(app, serve)
