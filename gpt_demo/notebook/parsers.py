"""The magics' argument parsers: one ``MagicParser`` per (sub)command, built once.

    >>> PARSERS["attention"].parse_args(["--layer", "13", "--head", "8"]).head
    8
    >>> "--probs" in PARSERS["chat"].format_help()
    True
"""

from __future__ import annotations

import argparse

from ..config import DEVICE_CHOICES, QUANTIZE_CHOICES
from ..feedback.pairs import MAX_K, MIN_K
from .parsing import MagicParser, add_param_flags
from .views import FORMATS

ATTENTION_VIEWS = ("map", "heads")


def _out_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="VAR", help="store the result in this notebook variable")


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registry name, hub id, local dir or .gguf (default: %%gpt config)")
    p.add_argument("--adapter", help="LoRA adapter to load on top of the model")


def chat_parser(prog: str = "%%gpt") -> MagicParser:
    p = MagicParser(prog, "Send the cell to the model as the next user message; the answer streams below.")
    p.add_argument("--system", help="system prompt (kept for the rest of the conversation)")
    add_param_flags(p)
    _model_flags(p)
    p.add_argument("--format", choices=FORMATS, default="markdown", help="how to show the answer (default markdown)")
    _out_name(p)
    p.add_argument("--new", action="store_true", help="start a new conversation first")
    p.add_argument("--no-interpolate", action="store_true", help="send {name} braces as written")
    p.add_argument("--probs", action="store_true",
                   help="also show each token coloured by its probability (hover: its top alternatives)")
    return p


def probs_parser() -> MagicParser:
    p = MagicParser("%gpt_probs", "The last %%gpt answer with each token coloured by its probability; hover a "
                                  "token for the alternatives the model weighed.")
    p.add_argument("--top", type=int, help="alternatives per token (0-20; default: as many as --probs shows)")
    p.add_argument("--model", help="score with this model (default: the one that chats)")
    _out_name(p)
    return p


def attention_parser() -> MagicParser:
    p = MagicParser("%gpt_attention", "Attention of TEXT (raw, at most 64 tokens): a heatmap with layer and head "
                                      "sliders and Find heads, or --view heads for every head of one layer.")
    p.add_argument("--layer", type=int, default=-1, help="layer (negative counts from the end; default the last)")
    p.add_argument("--head", type=int, help="head (default 0)")
    p.add_argument("--view", choices=ATTENTION_VIEWS, default="map", help="map (one head) or heads (a grid)")
    p.add_argument("--token", default="", help="read this token's row, e.g. it")
    p.add_argument("--target", default="", help="with --token: find the heads that link it to this token")
    p.add_argument("--model")
    return p


def config_parser() -> MagicParser:
    p = MagicParser("%gpt config", "Show or set the model and the default generation parameters.")
    p.add_argument("--model", help="registry name, hub id, local dir or .gguf")
    p.add_argument("--adapter", help="LoRA adapter name ('none' removes it)")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES)
    p.add_argument("--device", choices=DEVICE_CHOICES)
    add_param_flags(p)
    p.add_argument("--clear-params", action="store_true", help="forget the default generation parameters")
    return p


def next_parser() -> MagicParser:
    p = MagicParser("%gpt_next", "The most likely next tokens after TEXT (raw text, no chat template).")
    p.add_argument("--top-k", type=int, default=10, help="rows (default 10)")
    p.add_argument("--temperature", type=float, default=1.0, help="0-2, the slider's start (default 1.0)")
    p.add_argument("--model")
    return p


def chat_widget_parser() -> MagicParser:
    p = MagicParser("%gpt_chat", "A chat panel: Enter or Send, streaming reply, Stop, Retry, Clear, sliders, "
                                 "Show probabilities (defaults: the web Chat's temperature 0.3, top_p 0.9).")
    p.add_argument("--system", help="system prompt")
    add_param_flags(p)
    _model_flags(p)
    return p


def embed_parser() -> MagicParser:
    p = MagicParser("%gpt_embed", "Map texts (one per cell line, or --from VAR) in 2-D and search them.")
    p.add_argument("--from", dest="source", metavar="EXPR", help="a list of strings, a Series or a DataFrame")
    p.add_argument("--column", help="the DataFrame column holding the texts")
    p.add_argument("--method", choices=("pca", "umap"), default="pca", help="projection (default pca)")
    p.add_argument("--embedder", choices=("minilm", "chat"), default="minilm",
                   help="minilm (no chat model needed) or the chat model's hidden states")
    p.add_argument("--top-k", type=int, default=5, help="search results (default 5)")
    _out_name(p)
    return p


def moderate_parser() -> MagicParser:
    p = MagicParser("%%gpt_moderate", "Moderate each line of the cell in OpenAI's categories.")
    p.add_argument("--threshold", action="append", metavar="CATEGORY=NUMBER",
                   help="override a threshold, e.g. violence=0.3 (repeat)")
    _out_name(p)
    return p


def rank_parser() -> MagicParser:
    p = MagicParser("%gpt_rank", "Generate k answers to PROMPT and rank them; saved with the web app's rankings.")
    p.add_argument("-k", "--k", type=int, default=3, help=f"how many answers ({MIN_K}-{MAX_K}, default 3)")
    add_param_flags(p)
    p.add_argument("--model")
    return p


PARSERS = {
    "chat": chat_parser(), "config": config_parser(), "next": next_parser(), "chat_widget": chat_widget_parser(),
    "embed": embed_parser(), "moderate": moderate_parser(), "rank": rank_parser(),
    "probs": probs_parser(), "attention": attention_parser(),
    "reset": MagicParser("%gpt reset", "Forget the conversation (and its system prompt)."),
    "history": MagicParser("%gpt history", "Show the conversation so far."),
}
