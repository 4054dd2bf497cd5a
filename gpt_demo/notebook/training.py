"""``%gpt_train sft|reward|dpo|ppo DATA --out NAME [options]``: train in the background with a live curve.

    %gpt_train sft ../data/sft.jsonl --out my-sft --max-steps 20
    %gpt_train reward store --out my-rm --max-steps 50          # pairs from the rankings store
    %gpt_train dpo pairs.jsonl --out my-dpo --beta 0.1
    %gpt_train ppo prompts.txt --reward my-rm --out my-ppo --steps 10
    %gpt config --adapter my-sft                                # then chat with the result

The job runs on a worker thread, so the kernel stays responsive (other cells run while it
trains). The trainers' ``on_progress(step, total, metrics)`` hook feeds the curve (inline SVG);
Stop asks the job to end at its next step, the way the web Train tab does: the hook raises.
The options are the CLI's (``gpt-demo sft --help``), from the same config dataclasses.
"""

from __future__ import annotations

import html
import shlex
import threading
import time

import ipywidgets as w

from .parsing import MagicParser, one_line
from .views import curve_svg

KINDS = ("sft", "reward", "dpo", "ppo")
# Reported numbers that are bookkeeping, not a curve worth a panel (the trainers' curves.png skips them too).
NOT_CURVES = ("step", "epoch", "learning_rate", "grad_norm", "num_tokens", "runtime", "total_flos")
DATA_HELP = {
    "sft": "JSONL: {prompt, completion} or {messages: [...]} per line",
    "reward": "JSONL with prompt/chosen/rejected, or 'store' for the rankings store",
    "dpo": "JSONL with prompt/chosen/rejected, or 'store' for the rankings store",
    "ppo": "prompts: JSONL ({prompt} or {messages}) or .txt (one prompt per line)",
}


def _config_class(kind: str):
    from ..training.dpo_config import DPOTrainConfig
    from ..training.ppo_config import PPOTrainConfig
    from ..training.reward_config import RewardTrainConfig
    from ..training.sft_config import SFTTrainConfig

    return {"sft": SFTTrainConfig, "reward": RewardTrainConfig, "dpo": DPOTrainConfig, "ppo": PPOTrainConfig}[kind]


def train_parser(kind: str) -> MagicParser:
    from ..training.base_config import add_config_args

    p = MagicParser(f"%gpt_train {kind}", f"Train a {kind} adapter in the background, with a live curve and Stop.")
    p.add_argument("data", nargs="?", help=DATA_HELP[kind])
    p.add_argument("--out", help="adapter name (saved under $GPT_DEMO_HOME/adapters/NAME)")
    add_config_args(p, _config_class(kind), skip={"progress"})
    return p


def parse_train(line: str):
    """(kind, data, out, config) from a ``%gpt_train`` line; UsageError-style ValueErrors name the field."""
    from IPython.core.error import UsageError

    from ..limits import current_limits
    from ..training.base_config import config_values

    word, _, rest = line.strip().partition(" ")
    if word in ("", "-h", "--help", "help"):
        return None, train_parser("sft").format_help().replace("%gpt_train sft", "%gpt_train sft|reward|dpo|ppo"), None, None
    if word not in KINDS:
        raise UsageError(f"%gpt_train: kind={word!r} is not allowed; choose one of {', '.join(KINDS)}")
    parser = train_parser(word)
    try:
        argv = shlex.split(rest)
    except ValueError as exc:
        raise UsageError(f"%gpt_train {word}: {exc}") from None
    args = parser.parse_args(argv)
    if args.help:
        return None, parser.format_help(), None, None
    if not args.data:
        raise UsageError(f"%gpt_train {word}: data is missing; give {DATA_HELP[word]}")
    if not args.out:
        raise UsageError(f"%gpt_train {word}: --out is missing; name the adapter to write")
    cls = _config_class(word)
    config = {k: v for k, v in config_values(cls, args).items() if k != "out"}
    config["progress"] = False  # the widget is the progress display; a tqdm bar would print under it
    steps_name = "steps" if word == "ppo" else "max_steps"
    limit = current_limits().max_train_steps
    steps = config.get(steps_name)
    if steps is not None and not 1 <= steps <= limit:
        raise UsageError(f"%gpt_train {word}: {steps_name}={steps} is out of range; allowed: 1 <= {steps_name} <= "
                         f"{limit} (GPT_DEMO_MAX_TRAIN_STEPS)")
    cls(out=args.out, **config)  # validate every field before a thread starts
    return word, args.data, args.out, config


class TrainingStopped(RuntimeError):
    """Raised from the progress hook when Stop was pressed: the trainer ends at that step."""


class TrainPanel(w.VBox):
    """Status line, a live loss / reward / KL curve and a Stop button over a training thread.

    ``start()`` launches the job (the magic calls it); ``wait()`` joins it; ``stop()`` is the button.
    ``points`` holds every (step, metric, value); ``renders`` counts curve updates.
    """

    def __init__(self, kind: str, data: str, out: str, config: dict, *, settings=None, on_done=None):
        self.kind, self.data, self.out, self.config = kind, data, out, config
        self.settings, self.on_done = settings, on_done
        self.points: list[tuple[int, str, float]] = []
        self.renders = 0
        self.result = None
        self.error: BaseException | None = None
        self.cancel = threading.Event()
        self.finished = threading.Event()
        self.thread: threading.Thread | None = None
        self.status = w.HTML(f"Loading the base model and the data for <b>{kind}</b>...")
        self.curve = w.HTML(curve_svg([]))
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger")
        self.stop_button.on_click(lambda _: self.stop())
        self._started = time.monotonic()
        header = w.HTML(f"<b>%gpt_train {html.escape(kind)}</b> → adapter <code>{html.escape(out)}</code>")
        super().__init__([header, self.status, self.curve, self.stop_button])

    def start(self) -> "TrainPanel":
        self._started = time.monotonic()
        self.thread = threading.Thread(target=self._work, name=f"gpt-train-{self.kind}-{self.out}", daemon=True)
        self.thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (True) or ``timeout`` passes (False)."""
        return self.finished.wait(timeout)

    def stop(self) -> None:
        """Ask the job to end at its next step (the checkpoint so far stays; the same --out resumes)."""
        self.cancel.set()
        self.stop_button.disabled = True
        self.status.value += " <i>stopping at the next step...</i>"

    def _progress(self, step: int, total: int, metrics: dict) -> None:
        if self.cancel.is_set():
            raise TrainingStopped(f"stopped at step {step}; run it again with the same --out to resume")
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and key not in NOT_CURVES:
                self.points.append((int(step), key, float(value)))
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float) and k != "learning_rate")
        self.status.value = (f"<b>{self.kind}</b> step {step}/{total} · {time.monotonic() - self._started:.0f} s"
                             f"{' · ' + html.escape(shown) if shown else ''}")
        self.curve.value = curve_svg(self.points)  # a comm message from this thread: fine in ipywidgets 8
        self.renders += 1

    def _work(self) -> None:
        from .. import api
        from ..models.quiet import quiet_libraries

        try:
            func = getattr(api, f"train_{self.kind}")
            with quiet_libraries():
                self.result = func(self.data, self.out, settings=self.settings, on_progress=self._progress,
                                   **self.config)
            metrics = ", ".join(f"{k}={v:.3g}" for k, v in self.result.metrics.items()
                                if isinstance(v, float))[:300]
            self.status.value = (f"Saved <b>{self.result.kind}</b> adapter <b>{html.escape(self.result.name)}</b> "
                                 f"in {time.monotonic() - self._started:.0f} s: {html.escape(metrics)}. Chat with it: "
                                 f"<code>%gpt config --adapter {html.escape(self.result.name)}</code>")
            if self.on_done is not None:
                self.on_done(self.result)
        except TrainingStopped as exc:
            self.error = exc
            self.status.value = f"Stopped: {html.escape(str(exc))}."
        except Exception as exc:  # noqa: BLE001 - shown in the panel; the kernel stays up
            self.error = exc
            self.status.value = f"<span style='color:#b00'>{self.kind} failed: {html.escape(one_line(exc))}</span>"
        finally:
            self.stop_button.disabled = True
            self.finished.set()
