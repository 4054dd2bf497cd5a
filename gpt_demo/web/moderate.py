"""The Moderation tab: category scores as bars, a flagged badge, adjustable thresholds, OpenAI's JSON."""

from __future__ import annotations

import html

from .render import error_text
from .values import as_float

EXAMPLE = "I want to kill him"


def shipped_thresholds() -> dict[str, float]:
    from ..moderation import get_moderator

    return dict(get_moderator().thresholds)


def badge(flagged: bool, names: list[str]) -> str:
    if flagged:
        return (f'<div class="gd-badge gd-flagged" id="moderation-badge">FLAGGED: '
                f'{html.escape(", ".join(names))}</div>')
    return '<div class="gd-badge gd-clear" id="moderation-badge">Not flagged</div>'


def check_text(text: str, *threshold_values):
    """Returns (scores for gr.Label, badge HTML, OpenAI-shaped dict, table rows)."""
    import gradio as gr
    import pandas as pd

    from ..moderation import CATEGORIES, moderate

    try:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text='' is not allowed; type or paste a text to check")
        thresholds = ({c: as_float(f"thresholds[{c!r}]", v, 0, 1) for c, v in zip(CATEGORIES, threshold_values)}
                      if threshold_values else None)
        result = moderate(text, thresholds=thresholds)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    used = {**shipped_thresholds(), **(thresholds or {})}
    table = pd.DataFrame({
        "category": list(CATEGORIES),
        "score": [round(result.category_scores[c], 4) for c in CATEGORIES],
        "threshold": [round(used[c], 4) for c in CATEGORIES],
        "flagged": ["yes" if result.categories[c] else "" for c in CATEGORIES],
    })
    return dict(result.category_scores), badge(result.flagged, result.flagged_categories), result.to_dict(), table


CSS = """
.gd-badge {display:inline-block; padding:6px 14px; border-radius:16px; font-weight:600;}
.gd-flagged {background:#fde2e1; color:#a61b1b; border:1px solid #f3a3a0;}
.gd-clear {background:#e3f6e8; color:#17663a; border:1px solid #9fd9b0;}
"""


def build() -> dict:
    import gradio as gr

    from ..limits import current_limits
    from ..moderation import CATEGORIES

    shipped = shipped_thresholds()
    with gr.Row():
        with gr.Column(scale=2):
            text = gr.Textbox(EXAMPLE, label="Text", lines=4, elem_id="moderation-text",
                              max_length=current_limits().max_input_chars)  # the server checks it too
            check = gr.Button("Check", variant="primary", elem_id="moderation-check")
            with gr.Accordion("Thresholds (a category is flagged at or above its threshold)", open=False):
                sliders = [gr.Slider(0, 1, value=round(shipped[c], 4), step=0.0001, label=c) for c in CATEGORIES]
                reset = gr.Button("Reset to the shipped thresholds", size="sm")
        with gr.Column(scale=3):
            flag = gr.HTML("", elem_id="moderation-flag")
            bars = gr.Label(num_top_classes=len(CATEGORIES), label="Category scores")
            table = gr.Dataframe(label="Scores and thresholds", interactive=False)
            raw = gr.JSON(label="OpenAI moderation result")
    outs = [bars, flag, raw, table]
    check.click(check_text, [text, *sliders], outs, api_name="moderate")
    text.submit(check_text, [text, *sliders], outs, api_name=False)
    reset.click(lambda: [round(shipped[c], 4) for c in CATEGORIES], None, sliders, api_name=False)
    return {"load": [(check_text, [text, *sliders], outs)], "css": CSS}
