"""The "Parameters" panel: one control per ``GenerationParams`` field, shared by Chat and Rank.

``panel()`` builds the controls inside the current Blocks context and returns them in
``PARAM_FIELDS`` order; ``to_params(*values)`` turns their values back into validated
``GenerationParams`` (a ``ValueError`` names the field, the value and the range).
"""

from __future__ import annotations

from ..generation.params import MAX_BEST_OF, MAX_STOP_SEQUENCES, GenerationParams
from .values import as_float, as_int, optional_int

PARAM_FIELDS = (
    "temperature", "top_p", "max_tokens", "stop", "frequency_penalty", "presence_penalty",
    "best_of", "seed", "inject_start_text", "inject_restart_text",
)


def _help(name: str) -> str:
    return GenerationParams.__dataclass_fields__[name].metadata["help"]


def panel(defaults: GenerationParams, max_tokens_limit: int = 2048, open: bool = False, prefix: str | None = None):
    """Build the controls (inside an Accordion) and return them in ``PARAM_FIELDS`` order.

    ``prefix`` gives each control the element id ``{prefix}-{field}`` (for browser tests and CSS).
    """
    import gradio as gr

    def eid(name: str) -> str | None:
        return f"{prefix}-{name}" if prefix else None

    with gr.Accordion("Parameters", open=open):
        with gr.Row():
            temperature = gr.Slider(0, 2, value=defaults.temperature, step=0.05, label="temperature", elem_id=eid("temperature"), info=_help("temperature"))
            top_p = gr.Slider(0.01, 1, value=defaults.top_p, step=0.01, label="top_p", elem_id=eid("top_p"), info=_help("top_p"))
        with gr.Row():
            max_tokens = gr.Slider(1, max_tokens_limit, value=min(defaults.max_tokens, max_tokens_limit), step=1,
                                   label="max tokens", elem_id=eid("max_tokens"), info=_help("max_tokens"))
            best_of = gr.Slider(1, MAX_BEST_OF, value=defaults.best_of or 1, step=1, label="best_of", elem_id=eid("best_of"),
                                info="Candidates sampled; the one with the highest total log-probability is shown.")
        with gr.Row():
            frequency_penalty = gr.Slider(-2, 2, value=defaults.frequency_penalty, step=0.1, label="frequency penalty", elem_id=eid("frequency_penalty"),
                                          info=_help("frequency_penalty"))
            presence_penalty = gr.Slider(-2, 2, value=defaults.presence_penalty, step=0.1, label="presence penalty", elem_id=eid("presence_penalty"),
                                         info=_help("presence_penalty"))
        with gr.Row():
            stop = gr.Textbox(value="\n".join(defaults.stop), lines=2, label="stop sequences", elem_id=eid("stop"),
                              info=f"One per line, up to {MAX_STOP_SEQUENCES}; \\n means a newline.")
            seed = gr.Textbox(value="" if defaults.seed is None else str(defaults.seed), label="seed", elem_id=eid("seed"),
                              info="Blank for random; a whole number repeats the answer.")
        with gr.Row():
            inject_start = gr.Textbox(value=defaults.inject_start_text, label="inject start text", elem_id=eid("inject_start_text"),
                                      info=_help("inject_start_text"))
            inject_restart = gr.Textbox(value=defaults.inject_restart_text, label="inject restart text", elem_id=eid("inject_restart_text"),
                                        info=_help("inject_restart_text"))
    return [temperature, top_p, max_tokens, stop, frequency_penalty, presence_penalty, best_of, seed,
            inject_start, inject_restart]


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def to_params(*values, n: int = 1) -> GenerationParams:
    """``GenerationParams`` from the panel's values (``PARAM_FIELDS`` order); ``n`` answers."""
    if len(values) != len(PARAM_FIELDS):
        raise ValueError(f"expected {len(PARAM_FIELDS)} parameter values, got {len(values)}")
    v = dict(zip(PARAM_FIELDS, values))
    stop = tuple(_unescape(line) for line in str(v["stop"] or "").splitlines() if line != "")
    best_of = optional_int("best_of", v["best_of"]) or 1
    # Types are checked here (names and values in the message); ranges by GenerationParams.
    return GenerationParams(
        temperature=as_float("temperature", v["temperature"]),
        top_p=as_float("top_p", v["top_p"]),
        max_tokens=as_int("max_tokens", v["max_tokens"]),
        stop=stop,
        frequency_penalty=as_float("frequency_penalty", v["frequency_penalty"]),
        presence_penalty=as_float("presence_penalty", v["presence_penalty"]),
        n=n,
        best_of=best_of if best_of > n else None,
        seed=optional_int("seed", v["seed"]),
        inject_start_text=_unescape(v["inject_start_text"] or ""),
        inject_restart_text=_unescape(v["inject_restart_text"] or ""),
    )
