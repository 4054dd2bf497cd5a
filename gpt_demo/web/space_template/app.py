"""gpt-demo's web app as a Hugging Face Space (or locally: python app.py).

On a Space, GRADIO_SERVER_NAME=0.0.0.0 is set and the default model loads from its hub id.
"""
from gpt_demo.api import load_engine
from gpt_demo.web.app import build_app, launch
from gpt_demo.web.serve_config import ServeConfig

app = build_app(load_engine())

if __name__ == "__main__":
    launch(app, ServeConfig.from_settings())
