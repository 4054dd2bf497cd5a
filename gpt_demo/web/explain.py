"""The Explain tab: the next-token distribution (live temperature, step by step) and attention heatmaps.

Every event here runs the model, so all of them join the shared model queue (``web.queues``);
the engine's limits refuse an over-long text before it waits for a lock or a forward pass.
"""

from __future__ import annotations

from functools import partial

from ..inspect.attention_view import show_token  # noqa: F401 (the tab's, and web.probs')
from .queues import model_queue
from .render import error_text
from .values import as_float, as_int, optional_int
from .session import WebSession, ensure

DEFAULT_TEXT = "The best thing about AI is its ability to"
ATTENTION_EXAMPLE = "The animal didn't cross the street because it was too tired"




def clip_note(clipped: int, engine) -> str:
    """What to say when the text was longer than the context window (and clipped to its end)."""
    if not clipped:
        return ""
    return (f" The text is longer than the {engine.context_window}-token context window: its first {clipped} "
            "tokens were left out (GPT_DEMO_INSPECT_TOKENS=refuse refuses such text instead).")


def distribution_table(engine, text: str, temperature: float, top_k: int):
    """(DataFrame for the table and the bar chart, choices for the "take this token" box, tokens clipped)."""
    import pandas as pd

    rows = engine.next_tokens(text, top_k=as_int("rows", top_k, 1, 100), temperature=as_float("temperature", temperature, 0, 2))
    df = pd.DataFrame({
        "rank": list(range(1, len(rows) + 1)),
        "token": [f"{i + 1}. {show_token(r.token)}" for i, r in enumerate(rows)],
        "probability": [round(r.prob, 4) for r in rows],
        "logprob": [round(r.logprob, 3) for r in rows],
        "token_id": [r.token_id for r in rows],
    })
    choices = [(f"{show_token(r.token)}  ({r.prob:.1%})", r.token_id) for r in rows]
    return df, choices, getattr(rows, "clipped_tokens", 0)


def show_distribution(engine, session: WebSession | None, text: str, temperature, top_k, pool=None):
    """Returns (session, table, chart, choice box update, status), for the model the tab's picker chose."""
    import gradio as gr

    from .pickers import engine_for

    session = ensure(session)
    try:
        engine = engine_for(pool, engine, session, "explain")
        df, choices, clipped = distribution_table(engine, text, temperature, top_k)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    session.explain_text = text
    top = df.iloc[0]
    status = (f"Most likely next token: **{top['token'].split('. ', 1)[1]}** ({top['probability']:.1%}) at "
              f"temperature {temperature}.{clip_note(clipped, engine)}")
    return session, df.drop(columns=["token_id"]), df[["token", "probability"]], gr.update(choices=choices, value=None), status


def take_step(engine, session: WebSession | None, text: str, temperature, top_k, token_id, seed, pool=None):
    """Append the chosen token (or a sampled one when none is chosen). Returns the new text plus show_distribution."""
    import gradio as gr

    from .pickers import engine_for

    session = ensure(session)
    base = engine
    try:
        engine = engine_for(pool, engine, session, "explain")
        result = engine.step(text, as_float("temperature", temperature, 0, 2),
                             token_id=optional_int("token_id", token_id), seed=optional_int("seed", seed, 0),
                             top_k=as_int("rows", top_k, 1, 100))
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    how = "chosen" if token_id not in (None, "") else "sampled"
    out = show_distribution(base, session, result.text, temperature, top_k, pool=pool)
    status = f"Appended **{show_token(result.token)}** ({how}, p = {result.prob:.1%}). " + out[-1]
    return result.text, *out[:-1], status


def attention_plot(engine, text: str, layer, head: str):
    """A matplotlib heatmap of one layer's head (or the mean over heads), and a one-line reading."""
    from matplotlib.figure import Figure  # not pyplot: its global state is not thread-safe

    head_index = None if head in (None, "", "mean") else as_int("head", head)
    amap = engine.attention(text, layer=as_int("layer", layer), head=head_index)
    labels = [show_token(t) for t in amap.tokens]
    size = max(4.0, 0.42 * len(labels) + 1.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(amap.weights, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.set_xlabel("attends to (key)")
    ax.set_ylabel("token (query)")
    which = "mean over heads" if head_index is None else f"head {head_index}"
    ax.set_title(f"layer {amap.layer}, {which}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig, amap


def show_attention(engine, text: str, layer, head: str, token: str):
    """Returns (figure, reading): what ``token`` attends to most at this layer and head."""
    import gradio as gr

    from ..backends import CapabilityMissing

    try:
        fig, amap = attention_plot(engine, text, layer, head)
        reading = ""
        if token and token.strip():
            top = amap.top_attended(token, k=3)
            reading = f"**{token.strip()}** attends most to: " + ", ".join(
                f"{show_token(t)} ({w:.0%})" for t, w in top) + " (position 0, the attention sink, left out)."
    except CapabilityMissing as exc:  # a remote backend: say so in the tab, on every load, without an error box
        return None, f"**{exc}**."
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    return fig, reading


def find_heads(engine, text: str, token: str, target: str):
    """Table of the heads where ``token`` attends most to ``target``."""
    import gradio as gr
    import pandas as pd

    try:
        rows = engine.strongest_heads(text, token or "", target or "", k=8)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    return pd.DataFrame({"layer": [r[0] for r in rows], "head": [r[1] for r in rows],
                         "weight": [round(r[2], 3) for r in rows]})


def build(engine, state, jobs: int = 2, pool=None) -> dict:
    """The tab inside the current ``gr.Tab``; every event joins the model queue of ``jobs``.

    With ``pool`` the next-token table and the step-through follow a Model picker (a remote serves
    the table from its logprobs); attention maps stay on the base model's weights.
    """
    import gradio as gr

    from ..limits import current_limits
    from .pickers import picker

    max_chars = (getattr(engine, "limits", None) or current_limits()).max_input_chars
    queue = model_queue(jobs)

    model = getattr(engine.loaded, "model", None)  # None: a remote backend, which has no attention to show
    n_layers = int(model.config.num_hidden_layers) if model is not None else 1
    n_heads = int(model.config.num_attention_heads) if model is not None else 1
    with gr.Tabs() as inner:
        with gr.Tab("Next token", id="next-token"):
            explain_note = gr.Markdown("", elem_id="explain-model-note")
            explain_picker = picker(pool, engine, state, "explain", explain_note)
            text = gr.Textbox(DEFAULT_TEXT, label="Text (raw, no chat template)", lines=2, elem_id="explain-text",
                              max_length=max_chars)
            with gr.Row():
                temperature = gr.Slider(0, 2, value=1.0, step=0.05, label="temperature",
                                        info="Reshapes the same logits: low sharpens, high flattens.")
                top_k = gr.Slider(3, 30, value=10, step=1, label="rows")
            status = gr.Markdown("")
            with gr.Row():
                table = gr.Dataframe(label="Next-token probabilities", interactive=False, elem_id="explain-table")
                chart = gr.BarPlot(x="token", y="probability", sort="-y", x_label_angle=-45,
                                   label="Distribution", y_lim=[0, 1])
            with gr.Row():
                choice = gr.Dropdown([], value=None, label="Take this token (blank: sample one)", scale=3)
                seed = gr.Textbox("", label="seed (blank: random)", scale=1)
                step = gr.Button("Step: append a token", variant="primary", scale=2, elem_id="explain-step")
        with gr.Tab("Attention", id="attention"):
            a_text = gr.Textbox(ATTENTION_EXAMPLE, label="A short sentence", lines=1, max_length=max_chars)
            with gr.Row():
                default_layer = 13 if n_layers > 13 else n_layers - 1  # 13/8: "it" -> "animal" in SmolLM2-135M
                layer = gr.Slider(0, max(n_layers - 1, 1), value=default_layer, step=1, label="layer",
                                  interactive=model is not None)
                head = gr.Dropdown(["mean"] + [str(h) for h in range(n_heads)], value="8" if n_heads > 8 else "mean",
                                   label="head")
                token = gr.Textbox("it", label="Read the row of token")
            reading = gr.Markdown("")
            heatmap = gr.Plot(label="Attention weights")
            with gr.Row():
                target = gr.Textbox("animal", label="Which heads link the token to", scale=3)
                find = gr.Button("Find heads", scale=1)
            heads = gr.Dataframe(label="Strongest heads", interactive=False)

    show = partial(show_distribution, engine, pool=pool)
    outs = [state, table, chart, choice, status]
    for trigger in (text.submit, temperature.change, top_k.change):
        trigger(show, [state, text, temperature, top_k], outs, api_name=False, show_progress="hidden", **queue)
    step.click(partial(take_step, engine, pool=pool), [state, text, temperature, top_k, choice, seed], [text, *outs],
               api_name="explain_step", **queue)
    attn = partial(show_attention, engine)
    for trigger in (a_text.submit, layer.release, head.change, token.submit):
        trigger(attn, [a_text, layer, head, token], [heatmap, reading], api_name=False, **queue)
    find.click(partial(find_heads, engine), [a_text, token, target], [heads], api_name="attention_heads", **queue)
    next_token = {"text": text, "table": table, "chart": chart, "choice": choice, "status": status,
                  "temperature": temperature, "top_k": top_k, "tabs": inner, "jobs": jobs, "picker": explain_picker}
    return {"next_token": next_token,  # web.probs writes here when a token of an answer is clicked
            "load": [(show, [state, text, temperature, top_k], outs, queue),
                     (attn, [a_text, layer, head, token], [heatmap, reading], queue)]}
