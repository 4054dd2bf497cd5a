"""Per-token probabilities of an answer: each token coloured by how likely the model found it.

    >>> from gpt_demo.inspect.token_probs import TokenView, prob_colour, tokens_html
    >>> t = TokenView(0, " Paris", 7042, 0.77, -0.26, [(" Paris", 0.77), (" the", 0.06)])
    >>> t.rank, prob_colour(1.0), prob_colour(0.5), prob_colour(0.0)
    (1, '#a8f0a8', '#f0f0a8', '#f0a8a8')
    >>> "Paris" in tokens_html([t])
    True

The same idea as OpenAI's old Playground "Show probabilities" and text-generation-webui's
perplexity colours: green tokens were likely, red ones were a surprise; hovering a token shows
the five alternatives the model weighed at that position.

Where the numbers come from. ``answer_tokens`` reads an answer's ``logprobs`` as the engine
returns them (``GenerationParams(logprobs=True, top_logprobs=5)``, local or a remote server
that returns ``top_logprobs``): the log-probability of each token under the model at
temperature 1, whatever temperature sampled it. ``score_answer`` gets the same numbers for an
answer that was written without them, by reading it back through the model once (local models).

The HTML is self-contained: inline styles, one scoped ``<style>`` block and SVG-free spans with
``title`` fallbacks, no script and no CDN, so it shows in the web app, in JupyterLab and in an
exported notebook alike. Model text is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

TOP = 5  # alternatives shown per token (OpenAI's Playground showed 5; its legacy API caps there too)
MAX_SCORED_TOKENS = 2048  # an answer read back in one forward pass: (tokens, vocab) floats, ~400 MB here


@dataclass
class TokenView:
    """One token of an answer: its probability and the ``alternatives`` (token, probability), best first."""

    index: int
    token: str
    token_id: int  # -1 where a remote server returns only the text
    prob: float
    logprob: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)

    @property
    def rank(self) -> int | None:
        """1 when the model's favourite was taken; None when the token is not among the alternatives."""
        for r, (tok, _) in enumerate(self.alternatives, 1):
            if tok == self.token:
                return r
        return None


def answer_tokens(logprobs) -> list[TokenView]:
    """``TokenView`` rows from a choice's ``logprobs`` (a list of ``TokenLogprob``).

    Raises ValueError when there are none (the answer was generated without ``logprobs=True``).
    """
    if not logprobs:
        raise ValueError("the answer has no log-probabilities; generate it with logprobs=True, top_logprobs=5")
    return [TokenView(i, t.token, t.token_id, math.exp(t.logprob), t.logprob,
                      [(tok, math.exp(lp)) for tok, lp in t.top_logprobs])
            for i, t in enumerate(logprobs)]


def score_answer(loaded, prompt_ids: list[int], answer_ids: list[int], top: int = TOP):
    """Each answer token's ``TokenLogprob`` (with ``top`` alternatives), read back in one forward pass.

    The numbers equal what generation reports at temperature 1 and what ``next_tokens`` shows on
    the text up to each token. ``prompt_ids + answer_ids`` must fit the context window.
    """
    import torch

    from ..generation.results import TokenLogprob
    from ..models.guard import forward_guard

    if not answer_ids:
        raise ValueError("answer='' is not allowed; there are no tokens to look into")
    if not prompt_ids:
        raise ValueError("prompt_ids=[] is not allowed; the first token needs something before it")
    total = len(prompt_ids) + len(answer_ids)
    if total > loaded.context_window:
        raise ValueError(f"prompt and answer are {total} tokens; allowed: at most the {loaded.context_window}-token "
                         "context window")
    if len(answer_ids) > MAX_SCORED_TOKENS:
        raise ValueError(f"answer has {len(answer_ids)} tokens; allowed: at most {MAX_SCORED_TOKENS} to read back")
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise ValueError(f"top={top!r} is out of range; allowed: 0 <= top <= 20")
    model, tok = loaded.model, loaded.tokenizer
    ids = torch.tensor([list(prompt_ids) + list(answer_ids)], device=model.device)
    with forward_guard(model).shared(), torch.inference_mode():
        # Only the answer's positions get logits (the prompt's would be (T, vocab) floats for nothing).
        out = model(input_ids=ids, use_cache=False, logits_to_keep=len(answer_ids) + 1)
        logits = out.logits[0, :-1].float()  # (A, vocab): position i predicts answer token i
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(1, torch.tensor(answer_ids, device=logp.device)[:, None]).squeeze(1).tolist()
    values, top_ids = logp.topk(top, dim=-1) if top else (logp[:, :0], logp[:, :0].long())
    rows = []
    for a, lp, vs, ts in zip(answer_ids, chosen, values.tolist(), top_ids.tolist()):
        rows.append(TokenLogprob(tok.decode([a]), int(a), float(lp), [(tok.decode([t]), float(v)) for t, v in zip(ts, vs)]))
    return rows


def prefix_text(tokens: list[TokenView], index: int, prompt_text: str = "", tokenizer=None) -> str:
    """The raw text the model had read when it chose token ``index``: the prompt and the tokens before it.

    With the tokenizer and token ids the tokens are decoded together (a character split over two
    tokens comes out whole); otherwise their texts are joined.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(tokens):
        raise ValueError(f"token={index!r} is out of range; allowed: 0 <= token < {len(tokens)}")
    before = tokens[:index]
    if tokenizer is not None and all(t.token_id >= 0 for t in before):
        return prompt_text + tokenizer.decode([t.token_id for t in before])
    return prompt_text + "".join(t.token for t in before)


def prob_colour(prob: float) -> str:
    """Red (0) through yellow to green (1), light enough to read black text on: hue 120·p at 70 %
    saturation, 80 % lightness, as hex (JupyterLab's sanitizer drops ``hsl()`` in a reopened notebook)."""
    import colorsys

    p = min(1.0, max(0.0, float(prob)))
    r, g, b = colorsys.hls_to_rgb(round(120 * p) / 360, 0.8, 0.7)
    return f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"


def summary(tokens: list[TokenView]) -> dict:
    """Tokens, mean probability, perplexity (exp of the mean negative log-probability), the least likely token."""
    if not tokens:
        return {"tokens": 0, "mean_prob": 0.0, "perplexity": float("nan"), "least_likely": None}
    mean_lp = sum(t.logprob for t in tokens) / len(tokens)
    low = min(tokens, key=lambda t: t.prob)
    return {"tokens": len(tokens), "mean_prob": sum(t.prob for t in tokens) / len(tokens),
            "perplexity": math.exp(-mean_lp), "least_likely": (low.token, low.prob)}


def _visible(token: str) -> str:
    return token.replace("\n", "↵\n").replace("\t", "⇥\t") or "∅"


def _pct(p: float) -> str:
    return f"{100 * p:.1f} %" if p >= 0.001 else f"{100 * p:.2g} %"


STYLE = """<style>
.gd-probs{font:14px/1.9 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;word-break:break-word;color:#111}
.gd-probs .gd-tok{position:relative;border-radius:3px;padding:1px 0;cursor:pointer}
.gd-probs .gd-tok:hover{outline:2px solid #333}
.gd-probs .gd-alt{display:none;position:absolute;left:0;top:1.7em;z-index:50;background:#fff;color:#111;
 border:1px solid #999;border-radius:4px;padding:4px 6px;box-shadow:0 2px 6px rgba(0,0,0,.25);
 white-space:nowrap;width:max-content;font-size:12px;line-height:1.4}
.gd-probs .gd-tok:hover .gd-alt,.gd-probs .gd-tok.gd-open .gd-alt{display:block!important}
.gd-probs .gd-alt td{padding:0 4px;text-align:left;border:none;background:none;white-space:nowrap;word-break:normal}
.gd-probs .gd-alt tr.gd-taken td{font-weight:bold}
.gd-probs-legend{font:12px sans-serif;color:#555;margin-top:4px}
.gd-probs-legend span{display:inline-block;width:14px;height:10px;margin:0 1px;vertical-align:middle}
</style>"""


def _alternatives_html(t: TokenView) -> str:
    rows = "".join(
        f"<tr class='{'gd-taken' if tok == t.token else ''}'><td>{html.escape(repr(tok))}</td><td>{_pct(p)}</td>"
        f"<td><div style='background:#4c78a8;height:8px;width:{max(1, round(60 * p))}px'></div></td></tr>"
        for tok, p in t.alternatives)
    if t.rank is None:
        rows += f"<tr class='gd-taken'><td>{html.escape(repr(t.token))}</td><td>{_pct(t.prob)}</td><td>taken</td></tr>"
    # Hidden inline too: where a sanitizer drops the <style> block (JupyterLab, for a notebook opened from
    # disk) the tables stay hidden and the title attribute still shows the alternatives.
    return f"<span class='gd-alt' style='display:none'><table>{rows}</table></span>"


def _title(t: TokenView) -> str:
    alts = ", ".join(f"{tok!r} {_pct(p)}" for tok, p in t.alternatives)
    return f"{t.token!r}: {_pct(t.prob)}" + (f" | top {len(t.alternatives)}: {alts}" if alts else "")


def tokens_html(tokens: list[TokenView], *, legend: bool = True, dom_id: str | None = None) -> str:
    """The answer with each token's background coloured by ``prob_colour``; hover shows its alternatives.

    Every token is a ``<span class="gd-tok" data-i=INDEX data-prob=P>`` (what a click handler or a
    test reads); the alternatives are a table inside it, shown on hover, and in its ``title``.
    """
    spans = []
    for t in tokens:
        spans.append(
            f"<span class='gd-tok' data-i='{t.index}' data-prob='{t.prob:.6f}' style='background:{prob_colour(t.prob)}' "
            f"title='{html.escape(_title(t), quote=True)}'>{html.escape(_visible(t.token))}{_alternatives_html(t)}</span>")
    ident = f" id='{html.escape(dom_id, quote=True)}'" if dom_id else ""
    out = f"{STYLE}<div class='gd-probs'{ident}>{''.join(spans)}</div>"
    if legend and tokens:
        s = summary(tokens)
        scale = "".join(f"<span style='background:{prob_colour(p / 10)}'></span>" for p in range(11))
        low_tok, low_p = s["least_likely"]
        out += (f"<div class='gd-probs-legend'>probability 0 % {scale} 100 % &nbsp;·&nbsp; {s['tokens']} tokens, "
                f"mean {_pct(s['mean_prob'])}, perplexity {s['perplexity']:.2f}, least likely "
                f"{html.escape(repr(low_tok))} ({_pct(low_p)}). Hover a token for the alternatives.</div>")
    return out


def tokens_text(tokens: list[TokenView]) -> str:
    """A plain-text table (what ``text/plain`` and a terminal show): token, probability, top alternatives."""
    lines = [f"{'#':>3}  {'token':<16} {'prob':>8}  alternatives"]
    for t in tokens:
        alts = ", ".join(f"{tok!r} {_pct(p)}" for tok, p in t.alternatives[:3])
        lines.append(f"{t.index:>3}  {repr(t.token):<16} {_pct(t.prob):>8}  {alts}")
    return "\n".join(lines)
