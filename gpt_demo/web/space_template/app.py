"""gpt-demo's web app as a Hugging Face Space (or locally: python app.py).

The package is the gpt_demo/ folder beside this file (`gpt-demo spaces export` puts it there).
On a Space, GRADIO_SERVER_NAME=0.0.0.0 is set and the default model loads from its hub id.
Logins: GPT_DEMO_AUTH (raters) and GPT_DEMO_ADMIN (admins), as Space secrets.
"""
from gpt_demo.api import load_engine
from gpt_demo.web.app import build_app, launch
from gpt_demo.web.serve_config import ServeConfig

serve = ServeConfig.from_settings()
app = build_app(load_engine(), serve=serve)

if __name__ == "__main__":
    launch(app, serve)
