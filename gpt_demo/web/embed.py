"""The Embeddings tab: paste texts, see them as a scatter plot, search them, try analogies.

An event cannot pick its queue by an input's value, so every event here joins the shared
model queue (``web.queues``): with ``embedder="chat"`` they run the chat model.
"""

from __future__ import annotations

from functools import partial

from .queues import model_queue
from .render import error_text
from .values import as_int

EXAMPLE_TEXTS = """A cat sat on the mat.
A kitten rested on the rug.
Dogs love to chase balls in the park.
The puppy played fetch with a stick.
The stock market fell sharply today.
Shares dropped after the earnings report.
Investors worry about rising interest rates.
I baked bread with flour, water and yeast.
This pasta recipe needs garlic and olive oil.
Add a pinch of salt to the boiling water.
The rocket launched into orbit last night.
Astronauts repaired the space station's solar panel."""


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def plot_points(engine, texts: str, embedder: str, method: str):
    """(DataFrame x, y, text for the scatter plot, status) for one text per line."""
    import gradio as gr
    import pandas as pd

    lines = _lines(texts)
    try:
        if not lines:
            raise ValueError("texts='' is not allowed; paste at least one text, one per line")
        coords = engine.project(lines, dims=2, method=method, model=embedder)
    except (ValueError, ImportError) as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    df = pd.DataFrame({"x": coords[:, 0].round(4), "y": coords[:, 1].round(4), "text": lines})
    return df, f"{len(lines)} texts embedded with **{embedder}**, projected to 2-D by **{method.upper()}**. Hover a point to read it."


def search_texts(engine, texts: str, query: str, top_k, embedder: str):
    import gradio as gr
    import pandas as pd

    try:
        hits = engine.search(query, _lines(texts), top_k=as_int("top_k", top_k, 1), model=embedder)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    return pd.DataFrame({"rank": range(1, len(hits) + 1), "text": [h.text for h in hits],
                         "cosine": [round(h.score, 4) for h in hits]})


def run_analogy(engine, a: str, b: str, c: str, vocabulary: str, embedder: str):
    import gradio as gr
    import pandas as pd

    words = _lines(vocabulary.replace(",", "\n")) if vocabulary and vocabulary.strip() else None
    try:
        hits = engine.analogy(a, b, c, vocabulary=words, top_k=5, model=embedder)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    return pd.DataFrame({"answer": [h.text for h in hits], "cosine": [round(h.score, 4) for h in hits]})


def build(engine, jobs: int = 2) -> dict:
    """The tab inside the current ``gr.Tab``; every event joins the model queue of ``jobs``."""
    import gradio as gr

    queue = model_queue(jobs)

    with gr.Row():
        with gr.Column(scale=2):
            texts = gr.Textbox(EXAMPLE_TEXTS, label="Texts, one per line", lines=12, elem_id="embed-texts")
            with gr.Row():
                embedder = gr.Radio(["minilm", "chat"], value="minilm", label="Embedder",
                                    info="minilm: all-MiniLM-L6-v2; chat: the chat model's pooled hidden states")
                method = gr.Radio(["pca", "umap"], value="pca", label="Projection")
            plot_btn = gr.Button("Embed and plot", variant="primary")
        with gr.Column(scale=3):
            status = gr.Markdown("")
            scatter = gr.ScatterPlot(x="x", y="y", tooltip=["text"], label="2-D projection", height=420,
                                     elem_id="embed-scatter")
    with gr.Row():
        with gr.Column():
            query = gr.Textbox("an animal on a carpet", label="Search the texts")
            top_k = gr.Slider(1, 20, value=5, step=1, label="top k")
            search_btn = gr.Button("Search")
            hits = gr.Dataframe(label="Nearest by cosine", interactive=False)
        with gr.Column():
            with gr.Row():
                a = gr.Textbox("man", label="a")
                b = gr.Textbox("king", label="is to b")
                c = gr.Textbox("woman", label="as c is to ?")
            vocabulary = gr.Textbox("", label="Vocabulary (blank: ~400 built-in words; else comma or line separated)")
            analogy_btn = gr.Button("Analogy: b - a + c")
            answers = gr.Dataframe(label="Answers", interactive=False)

    plot = partial(plot_points, engine)
    plot_btn.click(plot, [texts, embedder, method], [scatter, status], api_name="embed_plot", **queue)
    search_btn.click(partial(search_texts, engine), [texts, query, top_k, embedder], [hits], api_name="embed_search",
                     **queue)
    query.submit(partial(search_texts, engine), [texts, query, top_k, embedder], [hits], api_name=False, **queue)
    analogy_btn.click(partial(run_analogy, engine), [a, b, c, vocabulary, embedder], [answers], api_name="embed_analogy",
                      **queue)
    return {"load": [(plot, [texts, embedder, method], [scatter, status], queue)]}
