"""The ``gpt-demo`` command line.

    gpt-demo chat                                   # interactive, streaming
    gpt-demo generate "What is the capital of France?" --temperature 0
    gpt-demo generate "Once upon a time" --raw --max-tokens 40 --stop "."
    gpt-demo next-tokens "The best thing about AI is its ability to" --top-k 10
    gpt-demo models
    gpt-demo embed "A cat sat on the mat." "A kitten rested on the rug." --project 2
    gpt-demo embed --search "feline" < sentences.txt
    gpt-demo moderate "I want to kill him" --json    # OpenAI's moderation shape; no chat model needed
    gpt-demo chat --moderation block                # gate your messages and the model's answers
    gpt-demo moderation train                       # retrain the moderation head

Parsing imports nothing heavy: ``gpt-demo --help`` never imports torch. Each
subcommand is one ``cmd_<name>`` function over the ``gpt_demo.api`` façade.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from . import __version__
from .flags import add_model_flags, add_param_flags, param_values, parse_thresholds


def _params(args: argparse.Namespace, defaults: dict | None = None):
    from .generation.params import GenerationParams

    values = {**(defaults or {}), **param_values(args)}
    if values.get("top_logprobs"):
        values["logprobs"] = True
    return GenerationParams.from_dict(values)


def _engine(args: argparse.Namespace):
    from .api import load_engine
    from .config import Settings

    print("Loading model...", file=sys.stderr, flush=True)
    return load_engine(model=args.model, quantize=args.quantize, device=args.device,
                       settings=Settings.from_env(decode=getattr(args, "decode", None)),
                       api_key_env=getattr(args, "api_key_env", None),
                       adapter=getattr(args, "adapter", None), reward_model=getattr(args, "reward_model", None))


def _read_stdin_text(what: str) -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError(f"{what} is missing; give it as an argument or on standard input")
    text = sys.stdin.read()
    if not text.strip():
        raise ValueError(f"{what}='' is not allowed; standard input was empty")
    return text


# -- subcommands ----------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    params = _params(args)  # validate before the (slow) load
    prompt = args.prompt if args.prompt is not None else _read_stdin_text("prompt")
    engine = _engine(args)
    if args.raw:
        run, stream = (lambda: engine.complete(prompt, params)), (lambda: engine.stream_complete(prompt, params))
    else:
        run = lambda: engine.chat(prompt, params, system=args.system)  # noqa: E731
        stream = lambda: engine.stream_chat(prompt, params, system=args.system)  # noqa: E731
    if args.json or params.n > 1:
        completion = run()
        if args.json:
            print(json.dumps(completion.to_dict(), ensure_ascii=False))
        else:
            for choice in completion.choices:
                print(f"--- choice {choice.index} (total logprob {choice.total_logprob:.2f})\n{choice.text}")
        return 0
    for delta in stream():
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


CHAT_HELP = "Commands: /reset (new conversation), /undo (drop the last exchange), /system TEXT, /exit."


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import Conversation
    from .generation.params import CHAT_DEFAULTS

    params = _params(args, CHAT_DEFAULTS)  # the web Chat's and the notebook's: temperature 0.3, top_p 0.9
    engine = _engine(args)
    conv = Conversation(system=args.system)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Chatting with {engine.model_name}. {CHAT_HELP}", file=sys.stderr)
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            conv.clear()
            print("(new conversation)", file=sys.stderr)
            continue
        if text == "/undo":
            conv.undo(), conv.undo()
            continue
        if text.startswith("/system"):
            conv.system = text[len("/system") :].strip() or None
            print(f"(system prompt: {conv.system!r})", file=sys.stderr)
            continue
        if not _moderation_allows(text, args.moderation, "user"):
            continue
        conv.add("user", text)
        if args.moderation == "block":  # the answer must be checked before anyone sees it
            answer = engine.chat(conv, params).text
            if not _moderation_allows(answer, "block", "assistant"):
                conv.undo()
                continue
            sys.stdout.write(answer + "\n")
            conv.add("assistant", answer)
            continue
        reply = []
        for delta in engine.stream_chat(conv, params):
            reply.append(delta)
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        conv.add("assistant", "".join(reply))
        _moderation_allows("".join(reply), args.moderation, "assistant")  # warn mode: after the fact
    return 0


def _moderation_allows(text: str, mode: str, role: str) -> bool:
    """Run the chat gate; print its warning or refusal to stderr; False when the text is blocked."""
    if mode == "off":
        return True
    from .api import gate

    decision = gate(text, mode, role=role)
    if decision.message:
        print(f"({decision.message})", file=sys.stderr)
    return decision.allowed


def cmd_next_tokens(args: argparse.Namespace) -> int:
    from .generation.distribution import _check_temperature

    _check_temperature(args.temperature)
    text = args.text if args.text is not None else _read_stdin_text("text")
    engine = _engine(args)
    rows = engine.next_tokens(text, top_k=args.top_k, temperature=args.temperature)
    if args.json:
        print(json.dumps([vars(r) for r in rows], ensure_ascii=False))
        return 0
    width = max(len(repr(r.token)) for r in rows)
    for r in rows:
        bar = "█" * round(r.prob * 40)
        print(f"{r.token!r:<{width}}  {100 * r.prob:6.2f} %  {bar}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    # Arguments are taken as given (a blank one is an error naming it); stdin lines that are blank are skipped.
    texts = list(args.texts) if args.texts else [t for t in _read_stdin_text("texts").splitlines() if t.strip()]
    from .api import embed, project, search

    engine = _engine(args) if args.embedder == "chat" else None  # MiniLM never loads the chat model
    if args.search is not None:
        hits = search(args.search, texts, top_k=args.top_k, model=args.embedder, engine=engine)
        if args.json:
            print(json.dumps([vars(h) for h in hits], ensure_ascii=False))
        else:
            for h in hits:
                print(f"{h.score:6.3f}  {h.text}")
        return 0
    vectors = embed(texts, args.embedder, engine=engine)
    if args.project:
        coords = project(vectors, dims=args.project, method=args.method)
        rows = [{"text": t, "coords": [round(float(x), 5) for x in c]} for t, c in zip(texts, coords)]
    else:
        rows = [{"text": t, "embedding": [round(float(x), 6) for x in v]} for t, v in zip(texts, vectors)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    for row in rows:
        values = row.get("coords") or row["embedding"]
        shown = ", ".join(f"{x:+.3f}" for x in values[:6]) + (", ..." if len(values) > 6 else "")
        print(f"[{shown}] ({len(values)} dims)  {row['text']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .config import Settings
    from .models.registry import list_models

    models = list_models()
    settings = Settings.from_env()
    caches = sorted(p.name for p in settings.models_dir.glob("*") if p.is_dir() and not p.name.startswith("."))
    if args.json:
        print(json.dumps({"models": models, "cache_dir": str(settings.models_dir), "caches": caches}))
        return 0
    for m in models:
        where = f"offline from {m['packaged_gguf']}" if m["packaged_gguf"] else f"from the hub ({m['hub_id']})"
        default = "  (default)" if m["name"] == settings.model else ""
        print(f"{m['name']}{default}\n    {m['description']}\n    loads {where}")
    print("Any hub id (owner/name), local model directory or .gguf file also works with --model.")
    print(f"Converted caches in {settings.models_dir}: {', '.join(caches) or 'none yet'}")
    return 0


def _stdin_lines(what: str) -> list[str]:
    text = _read_stdin_text(what)
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def cmd_moderate(args: argparse.Namespace) -> int:
    from .moderation import CATEGORIES, check_thresholds, get_moderator

    thresholds = check_thresholds(parse_thresholds(args.threshold), "--threshold") or None
    texts = [args.text] if args.text is not None else _stdin_lines("text")
    from .api import moderate

    results = moderate(texts, thresholds=thresholds)
    if args.json:
        print(json.dumps({"model": get_moderator().model_id, "results": [r.to_dict() for r in results]}, ensure_ascii=False))
        return 0
    if len(results) == 1:
        r = results[0]
        print("FLAGGED: " + ", ".join(r.flagged_categories) if r.flagged else "not flagged")
        for name in CATEGORIES:
            score = r.category_scores[name]
            mark = "  <- flagged" if r.categories[name] else ""
            print(f"{name:<17} {score:6.3f}  {'█' * round(score * 30):<30}{mark}")
        return 0
    for text, r in zip(texts, results):
        top = max(CATEGORIES, key=lambda n: r.category_scores[n])
        verdict = f"FLAGGED {','.join(r.flagged_categories)}" if r.flagged else f"ok (top {top} {r.category_scores[top]:.2f})"
        preview = text if len(text) <= 60 else text[:57] + "..."
        print(f"{verdict:<40} {preview}")
    return 0


def cmd_moderation_train(args: argparse.Namespace) -> int:
    from .moderation.config import config_from_args

    cfg = config_from_args(args)  # validate before the (slow) embedding
    from .moderation.train import train

    result = train(cfg)
    print(json.dumps({"thresholds": result.thresholds, "validation": result.report["validation"],
                      "head": str(result.head_path), "thresholds_file": str(result.thresholds_path)}))
    return 0


# -- parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt-demo",
        description="Run, look inside, fine-tune and align a real GPT-style chat model on your own machine.",
    )
    parser.add_argument("--version", action="version", version=f"gpt-demo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("chat", cmd_chat, "Interactive chat in the terminal (streams the answer).")
    p.add_argument("--moderation", choices=("off", "warn", "block"), default="off",
                   help="moderate your messages and the answers: warn, or block (answers are then shown whole, not streamed)")
    add_model_flags(p), add_param_flags(p)

    p = add("generate", cmd_generate, "One answer to PROMPT (through the chat template unless --raw).")
    p.add_argument("prompt", nargs="?", help="the prompt (default: standard input)")
    p.add_argument("--raw", action="store_true", help="continue the text as is, without the chat template")
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    add_model_flags(p), add_param_flags(p)

    p = add("next-tokens", cmd_next_tokens, "The most likely next tokens after TEXT, with probabilities.")
    p.add_argument("text", nargs="?", help="the text (default: standard input)")
    p.add_argument("--top-k", type=int, default=10, help="rows to show (default 10)")
    p.add_argument("--temperature", type=float, default=1.0, help="0-2 (default 1.0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_flags(p)

    p = add("embed", cmd_embed, "Sentence embeddings of TEXTS (or each line of standard input); search or project them.")
    p.add_argument("texts", nargs="*", help="texts to embed (default: one per line on standard input)")
    p.add_argument("--embedder", choices=["minilm", "chat"], default="minilm",
                   help="minilm: all-MiniLM-L6-v2 (384 dims); chat: the chat model's pooled hidden states")
    p.add_argument("--search", metavar="QUERY", help="print the texts closest to QUERY instead of vectors")
    p.add_argument("--top-k", type=int, default=5, help="results for --search (default 5)")
    p.add_argument("--project", type=int, choices=[2, 3], help="print 2-D or 3-D coordinates instead of vectors")
    p.add_argument("--method", choices=["pca", "umap"], default="pca", help="projection method (default pca)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_flags(p)

    p = add("models", cmd_models, "List the known models and the converted caches.")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("moderate", cmd_moderate, "Moderate TEXT (or each line of standard input) in OpenAI's categories.")
    p.add_argument("text", nargs="?", help="the text (default: standard input, one text per line)")
    p.add_argument("--threshold", action="append", metavar="CATEGORY=NUMBER", help="override a threshold, e.g. violence=0.3 (repeat)")
    p.add_argument("--json", action="store_true", help='print OpenAI\'s shape: {"results": [...]}')

    mp = add("moderation", cmd_moderate, "Train the moderation head (see `gpt-demo moderation train --help`).")
    mp.set_defaults(func=lambda args, _p=mp: _p.print_help() or 0)
    msub = mp.add_subparsers(dest="moderation_command", metavar="SUBCOMMAND")
    from .moderation.config import add_config_args

    tp = msub.add_parser("train", help="Train the head on the moderation data and write the weights and thresholds.",
                         description="Train the moderation head (MiniLM embeddings -> MLP) and choose thresholds on validation.")
    tp.set_defaults(func=cmd_moderation_train)
    add_config_args(tp)

    # Front-ends and workflows register their own subcommands (each module: ``register(add)``;
    # it must import nothing heavy at module level, so --help stays instant).
    import importlib

    for module in COMMAND_MODULES:
        try:
            commands = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):  # that front-end is not part of this build
                continue
            raise
        commands.register(add)
    return parser


# Modules that add subcommands (serve, spaces, feedback, jupyter, sft, reward, ppo, dpo, adapters).
COMMAND_MODULES = (
    "gpt_demo.web.commands",
    "gpt_demo.feedback.commands",
    "gpt_demo.notebook.commands",
    "gpt_demo.training.commands",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as exc:
        print(f"gpt-demo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
