"""The magics: one ``Magics`` class, one parser and one ``handle_<sub>`` per (sub)command.

    %%gpt [--system S] [--temperature T] ... [--format markdown|text|code|json] [--out VAR] [--new]
    %gpt config [--model M] [--adapter A] [--quantize Q] [--device D] [--temperature T] ...
    %gpt reset | %gpt history | %gpt help
    %gpt_chat | %gpt_next TEXT | %gpt_embed | %%gpt_moderate | %gpt_rank PROMPT
    %%gpt --probs | %gpt_probs            (each token of an answer coloured by its probability)
    %gpt_attention TEXT [--layer L --head H] [--token it --target animal] | --view heads
    %gpt_train sft|reward|dpo|ppo DATA --out NAME [options]   (background, live curve, Stop)

Lines are never ``$var``/``{var}``-expanded by IPython (``@no_var_expand``): the
magics interpolate ``{name}``, ``{In[3]}``, ``{Out[3]}`` themselves and leave every
other brace as written, so prompts with code or JSON work.
"""

from __future__ import annotations

import keyword
import time

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display

from ..config import Settings
from ..feedback.pairs import MAX_K, MIN_K
from ..generation.params import CHAT_DEFAULTS, GenerationParams
from .parsers import PARSERS, rank_parser  # noqa: F401  (rank_parser: the rankings store's tests read its -k range)
from .parsing import interpolate, one_line, param_values, parse
from .state import NotebookState
from .views import Answer, ConfigView, HelpText, History, ModerationTable, Status

STREAM_INTERVAL_S = 0.05  # update the answer's display at most 20 times a second
RANK_TEMPERATURE = 0.9  # ranking needs different answers, so %gpt_rank samples unless told otherwise
SUBCOMMANDS = ("config", "reset", "history", "help")
ERRORS = (ValueError, RuntimeError, OSError, ImportError, LookupError)


def _check_out(name: str | None) -> None:
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        raise UsageError(f"--out {name!r} is not allowed; give a Python variable name")


@magics_class
class GptMagics(Magics):
    """``%gpt``/``%%gpt`` and the widget magics; ``self.state`` is what they share."""

    def __init__(self, shell=None):
        super().__init__(shell)
        self.state = NotebookState()

    def _guard(self, prog: str, func, *args):
        """Run a handler; any expected failure becomes one line (IPython shows UsageError without traceback)."""
        from ..models.quiet import quiet_libraries

        try:
            with quiet_libraries():  # no library warning or transformers log line under the cell
                return func(*args)
        except UsageError:
            raise
        except ERRORS as exc:
            raise UsageError(f"{prog}: {one_line(exc)}") from None

    def _text(self, text: str, no_interpolate: bool = False) -> str:
        return text if no_interpolate else interpolate(text, self.shell.user_ns)

    def _store(self, name: str | None, value) -> None:
        if name:
            self.shell.user_ns[name] = value

    # -- %gpt / %%gpt ---------------------------------------------------------------
    @no_var_expand
    @line_cell_magic
    def gpt(self, line: str, cell: str | None = None):
        """Chat in a cell (%%gpt) or manage the chat (%gpt config|reset|history|help); see %gpt help."""
        if cell is not None:
            return self._guard("%%gpt", self.handle_chat, line, cell)
        word, _, rest = line.strip().partition(" ")
        if word in SUBCOMMANDS:
            return self._guard(f"%gpt {word}", getattr(self, f"handle_{word}"), rest)
        if not line.strip():
            return self.handle_help("")
        return self._guard("%gpt", self.handle_chat, line, None)  # a one-line prompt: %gpt [options] PROMPT

    def handle_help(self, line: str):
        from .training import train_parser

        parts = [PARSERS[k].format_help() for k in ("chat", "config", "chat_widget", "next", "embed", "moderate", "rank",
                                                     "probs", "attention")]
        return HelpText("\n".join(parts + [train_parser("sft").format_help()]))

    def handle_chat(self, line: str, cell: str | None):
        parser = PARSERS["chat"]
        args, rest = parse(parser, line, text_allowed=cell is None)
        if args.help:
            return HelpText(parser.format_help())
        _check_out(args.out)
        prompt = self._text(cell if cell is not None else rest, args.no_interpolate).strip()
        if not prompt:
            raise UsageError("%%gpt: the message is empty; write it in the cell body")
        # --probs asks for each token's logprob and its inspect.token_probs.TOP alternatives (imported here:
        # gpt_demo.inspect imports torch, and %load_ext must not)
        from ..inspect.token_probs import TOP

        probs = {"logprobs": True, "top_logprobs": TOP} if args.probs else {}
        params = self.state.config.generation_params(**param_values(args), **probs)
        engine = self.state.engine(args.model, args.adapter)  # params were validated before any load
        self.state.last_probs = None  # a new answer: the last one's numbers no longer apply
        conv = self.state.conversation
        if args.new:
            conv.clear()
            conv.system = None
        if args.system is not None:
            conv.system = self._text(args.system, args.no_interpolate) or None
        conv.add("user", prompt)
        from ..api import Streamed  # keeps the Completion (with logprobs for --probs) the stream returns

        answer = Answer("", args.format, done=False)
        handle = display(answer, display_id=True)
        parts: list[str] = []
        stream = Streamed(engine.stream_chat(conv, params))
        try:
            last = time.monotonic()
            for delta in stream:
                parts.append(delta)
                if time.monotonic() - last > STREAM_INTERVAL_S:
                    answer.text = "".join(parts)
                    handle.update(answer)
                    last = time.monotonic()
        except KeyboardInterrupt:
            parts.append(" [interrupted]")
        except BaseException:
            conv.undo()
            handle.update(Status("(no answer)"))
            raise
        answer.text, answer.done = "".join(parts), True
        handle.update(answer)
        conv.add("assistant", answer.text)
        self._store(args.out, answer.value())
        if args.probs and stream.completion is not None and stream.completion.choices[0].logprobs:
            from .probs import TokenProbs

            view = TokenProbs.from_logprobs(stream.completion.choices[0].logprobs, "Each token coloured by its "
                                            f"probability under the model (temperature 1); hover for the top {TOP}.")
            before = conv.messages[:-1]  # what the model read before the answer (copies)
            self.state.last_probs = (before, answer.text, self.state.engine_key(args.model, args.adapter), view.tokens)
            display(view)
        return None

    def handle_config(self, line: str):
        parser = PARSERS["config"]
        args, _ = parse(parser, line)
        if args.help:
            return HelpText(parser.format_help())
        cfg = self.state.config
        new_params = {} if args.clear_params else dict(cfg.params)
        new_params.update(param_values(args))
        shown = GenerationParams.from_dict({**CHAT_DEFAULTS, **new_params})  # validate before changing anything
        cfg.params = new_params
        for name in ("model", "quantize", "device"):
            if getattr(args, name) is not None:
                setattr(cfg, name, getattr(args, name))
        if args.adapter is not None:
            cfg.adapter = None if args.adapter.lower() in ("", "none") else args.adapter
        settings = Settings.from_env()
        rows = {
            "model": cfg.model or f"{settings.model} (default)",
            "adapter": cfg.adapter or "none",
            "quantize": cfg.quantize or f"{settings.quantize} (default)",
            "device": cfg.device or f"{settings.device} (default)",
            "loaded": "yes" if self.state.is_loaded() else "no (loads on the first chat)",
            "memory": self._memory_row(),
        }
        for name in ("temperature", "top_p", "max_tokens", "stop", "frequency_penalty", "presence_penalty", "best_of", "seed"):
            value = getattr(shown, name)
            rows[name] = f"{value!r}" + ("" if name in new_params else " (default)")
        return ConfigView(rows)

    def _memory_row(self) -> str:
        d = self.state.engines.describe()  # each model loaded by a cell's --model / --adapter is a full copy
        return (f"{d['memory_mb']} MB in {len(d['engines'])} model(s); at most {d['max_engines']} loaded by "
                "cells are kept, least recently used dropped first (GPT_DEMO_MAX_ENGINES)")

    def handle_reset(self, line: str):
        args, _ = parse(PARSERS["reset"], line)
        if args.help:
            return HelpText(PARSERS["reset"].format_help())
        self.state.conversation.clear()
        self.state.conversation.system = None
        self.state.last_probs = None
        return Status("New conversation.")

    def handle_history(self, line: str):
        args, _ = parse(PARSERS["history"], line)
        if args.help:
            return HelpText(PARSERS["history"].format_help())
        return History(self.state.conversation.messages)

    # -- widgets --------------------------------------------------------------------
    @no_var_expand
    @line_magic
    def gpt_chat(self, line: str):
        """A chat panel (ipywidgets): Enter sends, the reply streams; Stop, Retry, Clear, sliders, probabilities."""
        return self._guard("%gpt_chat", self.handle_chat_widget, line)

    def handle_chat_widget(self, line: str):
        from .widgets import ChatPanel

        parser = PARSERS["chat_widget"]
        args, _ = parse(parser, line)
        if args.help:
            return HelpText(parser.format_help())
        params = self.state.config.generation_params(**param_values(args))
        engine = self.state.engine(args.model, args.adapter)
        return ChatPanel(engine, params, system=args.system)

    @no_var_expand
    @line_magic
    def gpt_next(self, line: str):
        """The next-token probability table for TEXT, with a temperature slider."""
        return self._guard("%gpt_next", self.handle_next, line)

    def handle_next(self, line: str):
        from .widgets import NextTokens

        parser = PARSERS["next"]
        args, text = parse(parser, line, text_allowed=True)
        if args.help:
            return HelpText(parser.format_help())
        text = self._text(text)
        if not text.strip():
            raise UsageError("%gpt_next: give the text, e.g. %gpt_next The capital of France is")
        engine = self.state.engine(args.model)
        rows = engine.next_tokens(text, top_k=args.top_k, temperature=args.temperature)  # raises on bad values
        return NextTokens(engine, text, top_k=args.top_k, temperature=args.temperature, rows=rows)

    @no_var_expand
    @line_magic
    def gpt_probs(self, line: str):
        """The last answer with each token coloured by its probability (hover: the alternatives)."""
        return self._guard("%gpt_probs", self.handle_probs, line)

    def handle_probs(self, line: str):
        from ..inspect.token_probs import TOP, answer_tokens
        from .probs import TokenProbs, last_answer

        parser = PARSERS["probs"]
        args, _ = parse(parser, line)
        if args.help:
            return HelpText(parser.format_help())
        _check_out(args.out)
        top = TOP if args.top is None else args.top
        if not 0 <= top <= 20:
            raise UsageError(f"%gpt_probs: top={top} is out of range; allowed: 0 <= top <= 20")
        before, answer = last_answer(self.state.conversation.messages)
        cached = self.state.last_probs  # the same question, answer and model: the numbers as generated
        if cached is not None and cached[:3] == (before, answer, self.state.engine_key(args.model)) and top == TOP:
            tokens, how = cached[3], "as generated"
        else:  # read back through the model once: the numbers generation would have reported
            engine = self.state.engine(args.model)
            tokens, how = answer_tokens(engine.score_answer(before, answer, top=top)), "read back"
        self._store(args.out, tokens)
        return TokenProbs(tokens, f"The last answer, {how}: each token coloured by its probability under the "
                                  f"model (temperature 1); hover for the top {top}.")

    @no_var_expand
    @line_magic
    def gpt_attention(self, line: str):
        """Attention heatmaps of TEXT: layer and head sliders, Find heads, or a grid of every head."""
        return self._guard("%gpt_attention", self.handle_attention, line)

    def handle_attention(self, line: str):
        from .attention import EXAMPLE, AttentionExplorer, HeadsGrid

        parser = PARSERS["attention"]
        args, text = parse(parser, line, text_allowed=True)
        if args.help:
            return HelpText(parser.format_help())
        text = self._text(text).strip() or EXAMPLE
        if args.target and not args.token:
            raise UsageError("%gpt_attention: --target needs --token (which token links to it), e.g. --token it")
        engine = self.state.engine(args.model)
        if args.view == "heads":
            return HeadsGrid(engine, text, layer=args.layer, highlight=args.head)
        return AttentionExplorer(engine, text, layer=args.layer, head=args.head, token=args.token, target=args.target)

    @no_var_expand
    @line_magic
    def gpt_train(self, line: str):
        """Train an adapter (sft | reward | dpo | ppo) in the background, with a live curve and Stop."""
        return self._guard("%gpt_train", self.handle_train, line)

    def handle_train(self, line: str):
        from .training import TrainPanel, parse_train

        kind, data, out, config = parse_train(self._text(line))  # {name}: e.g. a path held in a variable
        if kind is None:
            return HelpText(data)
        running = self.state.training.get(out)
        if running is not None and not running.finished.is_set():
            raise UsageError(f"%gpt_train: out={out!r} is still training; Stop it or choose another --out")
        panel = TrainPanel(kind, data, out, config, on_done=lambda result: self.state.engines.forget(result.name))
        self.state.training[out] = panel
        return panel.start()

    @no_var_expand
    @line_cell_magic
    def gpt_embed(self, line: str, cell: str | None = None):
        """A 2-D map of texts (cell lines or --from VAR) with a cosine search box."""
        return self._guard("%gpt_embed", self.handle_embed, line, cell)

    def _texts_from(self, expr: str, column: str | None) -> list[str]:
        try:
            value = self.shell.ev(expr)
        except Exception as exc:  # noqa: BLE001 - a NameError in the user's expression
            raise UsageError(f"%gpt_embed: --from {expr}: {one_line(exc)}") from None
        if hasattr(value, "columns"):  # a DataFrame
            if column is None or column not in value.columns:
                cols = ", ".join(map(str, value.columns))
                raise UsageError(f"%gpt_embed: --column {column!r} is not a column of {expr}; choose one of {cols}")
            value = value[column]
        elif column is not None:
            raise UsageError(f"%gpt_embed: --column needs a DataFrame, but {expr} is a {type(value).__name__}")
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise UsageError(f"%gpt_embed: --from {expr} must be a list of strings, a Series or a DataFrame")
        return [v if isinstance(v, str) else str(v) for v in value]

    def handle_embed(self, line: str, cell: str | None):
        from .. import api
        from .widgets import EmbeddingMap

        parser = PARSERS["embed"]
        args, _ = parse(parser, line)
        if args.help:
            return HelpText(parser.format_help())
        _check_out(args.out)
        if args.source:
            texts = self._texts_from(args.source, args.column)
        else:
            texts = [t for t in (cell or "").splitlines() if t.strip()]
        if len(texts) < 2:
            raise UsageError("%gpt_embed: give at least 2 texts (one per cell line, or --from VAR)")
        engine = self.state.engine() if args.embedder == "chat" else None
        vectors = api.embed(texts, args.embedder, engine=engine)  # (N, D)
        coords = api.project(vectors, dims=2, method=args.method)  # (N, 2)
        self._store(args.out, {"texts": texts, "embeddings": vectors, "coords": coords})
        return EmbeddingMap(texts, vectors, coords, lambda q: api.embed([q], args.embedder, engine=engine)[0],
                            method=args.method, top_k=args.top_k)

    @no_var_expand
    @line_cell_magic
    def gpt_moderate(self, line: str, cell: str | None = None):
        """Moderation scores per line of the cell (or the text after %gpt_moderate)."""
        return self._guard("%%gpt_moderate", self.handle_moderate, line, cell)

    def handle_moderate(self, line: str, cell: str | None):
        from .. import api
        from ..flags import parse_thresholds
        from ..moderation import CATEGORIES, check_thresholds, get_moderator

        parser = PARSERS["moderate"]
        args, rest = parse(parser, line, text_allowed=cell is None)
        if args.help:
            return HelpText(parser.format_help())
        _check_out(args.out)
        overrides = check_thresholds(parse_thresholds(args.threshold), "--threshold")
        texts = [t for t in (cell if cell is not None else rest).splitlines() if t.strip()]
        if not texts:
            raise UsageError("%%gpt_moderate: give the texts, one per line of the cell")
        results = api.moderate(texts, thresholds=overrides or None)
        table = ModerationTable(texts, results, {**get_moderator().thresholds, **overrides}, CATEGORIES)
        self._store(args.out, table.records())
        return table

    @no_var_expand
    @line_magic
    def gpt_rank(self, line: str):
        """Generate k answers to PROMPT and rank them; the ranking joins the web app's store."""
        return self._guard("%gpt_rank", self.handle_rank, line)

    def handle_rank(self, line: str):
        from ..feedback import FeedbackStore
        from .widgets import RankingPanel

        parser = PARSERS["rank"]
        args, prompt = parse(parser, line, text_allowed=True)
        if args.help:
            return HelpText(parser.format_help())
        prompt = self._text(prompt).strip()
        if not prompt:
            raise UsageError("%gpt_rank: give the prompt, e.g. %gpt_rank Write a slogan for a bakery")
        if not MIN_K <= args.k <= MAX_K:  # the store's range, checked before anything is generated
            raise UsageError(f"%gpt_rank: k={args.k} is out of range; allowed: {MIN_K} <= k <= {MAX_K}")
        values = {**self.state.config.params, **param_values(args), "n": args.k}
        values.pop("best_of", None)  # k answers, not the best of them
        if args.temperature is None:
            values["temperature"] = RANK_TEMPERATURE
        params = GenerationParams.from_dict(values)
        engine = self.state.engine(args.model)
        completion = engine.chat(prompt, params)
        candidates = [c.text for c in completion.choices]
        return RankingPanel(prompt, candidates, model=engine.model_name, adapter=engine.adapter,
                            params=params.to_dict(), session_id=self.state.session_id, open_store=FeedbackStore.open)
