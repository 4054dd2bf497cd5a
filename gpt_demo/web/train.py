"""The Train tab: SFT, reward, DPO and PPO jobs on uploaded data or the rankings store, with a live curve;
the adapters they produce; and the base model against adapters, side by side.

``run_job`` is a generator: training runs on a worker thread and reports through ``on_progress``;
the generator turns those reports into status text and a growing loss / reward / KL table.
"""

from __future__ import annotations

import queue
import threading
import time
from functools import partial

from .engines import BASE
from .render import error_text
from .values import as_float, as_int

KINDS = ("sft", "reward", "dpo", "ppo")
KIND_HELP = {
    "sft": "Supervised fine-tuning: prompt/completion or chat JSONL (upload).",
    "reward": "Reward model from preference pairs: the rankings store or a prompt/chosen/rejected JSONL.",
    "dpo": "DPO from preference pairs: the rankings store or a JSONL file.",
    "ppo": "PPO against a reward adapter: a prompts file (one per line or JSONL with 'prompt').",
}
MAX_COMPARE = 4
_RUNNING: dict[str, threading.Thread] = {}  # adapter name -> its training thread
_RUNNING_LOCK = threading.Lock()


def adapter_table(settings=None):
    import pandas as pd

    from ..api import list_adapters

    rows = [a.to_dict() for a in list_adapters(settings)]
    cols = ["name", "kind", "base_model", "created_at"]
    table = pd.DataFrame([{c: r.get(c, "") for c in cols} | {"metrics": _metric_text(r.get("metrics", {}))}
                          for r in rows], columns=cols + ["metrics"])
    return table, [r["name"] for r in rows]


def _metric_text(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items() if v is not None and not isinstance(v, (dict, list)))[:200]


def _job_args(kind: str, source: str, upload, out: str, max_steps, learning_rate, beta, reward_adapter):
    """(data, keyword config) for ``gpt_demo.api.train_<kind>``; ValueError names what is missing."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed; choose one of {', '.join(KINDS)}")
    if not out or not out.strip():
        raise ValueError("out='' is not allowed; name the adapter to write (letters, digits, '.', '_', '-')")
    path = getattr(upload, "name", upload) if upload else None
    if source == "rankings store":
        if kind not in ("reward", "dpo"):
            raise ValueError(f"source='rankings store' is not allowed for {kind}; upload a file")
        data = "store"
    else:
        if not path:
            raise ValueError("file=None is not allowed; upload a JSONL file (or choose the rankings store)")
        data = path
    config = {"max_steps": as_int("steps", max_steps, 1), "learning_rate": as_float("learning_rate", learning_rate, 0, 1),
              "progress": False}
    if kind in ("dpo", "ppo"):
        config["beta"] = as_float("beta", beta, 0, 10)
    if kind == "ppo":
        if not reward_adapter:
            raise ValueError("reward=None is not allowed; pick a reward adapter (train one with kind=reward)")
        config["reward"] = reward_adapter
        config["steps"] = config.pop("max_steps")
    return data, config


def run_job(pool, settings, kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter, progress=None):
    """Yields (status, curve DataFrame, adapters table) while the job runs on a worker thread.

    ``progress`` is the event's ``gr.Progress`` (a bar over the outputs), or None.
    """
    import gradio as gr
    import pandas as pd

    from .. import api

    try:
        data, config = _job_args(kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    name = out.strip()
    events: "queue.Queue[tuple]" = queue.Queue()
    points: list[dict] = []
    cancel = threading.Event()

    def on_progress(step, total, metrics):
        if cancel.is_set():  # raised inside the trainer's callback: training stops at this step
            raise JobStopped(f"stopped at step {step}; run it again with the same name to resume")
        events.put(("progress", step, total, dict(metrics or {})))

    def work():
        try:
            func = getattr(api, f"train_{kind}")
            result = func(data, name, settings=settings, on_progress=on_progress, **config)
            events.put(("done", result))
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app stays up
            events.put(("error", exc))
        finally:
            with _RUNNING_LOCK:
                _RUNNING.pop(name, None)

    worker = threading.Thread(target=work, name=f"train-{kind}-{name}", daemon=True)
    with _RUNNING_LOCK:  # one writer per adapter directory, even after Stop (it ends at its next step)
        if name in _RUNNING:
            raise gr.Error(f"out={name!r} is still training (a stopped job ends at its next step); "
                           "wait for it or choose another name", print_exception=False)
        _RUNNING[name] = worker
    worker.start()
    try:
        yield from _watch(kind, events, points, pool, settings, progress)
    finally:  # Stop cancels this generator: tell the worker to stop at its next step
        cancel.set()


class JobStopped(RuntimeError):
    """Raised from the progress callback when the user pressed Stop."""


def _watch(kind, events, points, pool, settings, progress=None):
    import gradio as gr
    import pandas as pd

    started = time.time()
    status = f"Loading the base model and the data for **{kind}**..."
    yield status, pd.DataFrame(columns=["step", "value", "metric"]), gr.update()
    while True:
        try:
            event = events.get(timeout=1.0)
        except queue.Empty:
            continue
        if event[0] == "progress":
            _, step, total, metrics = event
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch", "learning_rate"):
                    points.append({"step": step, "value": float(value), "metric": key})
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
            status = f"**{kind}** step {step}/{total} · {time.time() - started:.0f} s · {shown}"
            if progress is not None and total:
                progress((step, total), desc=f"{kind} step", unit="steps")
            yield status, pd.DataFrame(points, columns=["step", "value", "metric"]), gr.update()
        elif event[0] == "error":
            exc = event[1]
            raise gr.Error(f"{kind} failed: {error_text(exc)}", print_exception=False)
        else:
            result = event[1]
            pool.forget(result.name)
            table, names = adapter_table(settings)
            status = (f"Saved **{result.kind}** adapter **{result.name}** in {time.time() - started:.0f} s: "
                      f"{_metric_text(result.metrics)}")
            yield status, pd.DataFrame(points, columns=["step", "value", "metric"]), table
            return


def compare(pool, prompt: str, adapters: list[str], temperature, max_tokens):
    """One answer per chosen model (the base and up to three adapters), in the same order."""
    import gradio as gr

    if not prompt or not prompt.strip():
        raise gr.Error("prompt='' is not allowed; type a prompt to compare on", print_exception=False)
    chosen = ([BASE] + [a for a in (adapters or []) if a != BASE])[:MAX_COMPARE]
    outs = []
    for name in chosen:
        try:
            engine = pool.get(name)
            text = engine.chat(prompt, temperature=as_float("temperature", temperature, 0, 2),
                               max_tokens=as_int("max_tokens", max_tokens, 1), seed=0).text
        except (ValueError, RuntimeError) as exc:
            text = f"(could not load {name}: {error_text(exc)})"
        outs.append(gr.update(value=text, label=name, visible=True))
    outs += [gr.update(value="", visible=False)] * (MAX_COMPARE - len(outs))
    return outs


def build(engine, store, state, *, pool=None, settings=None) -> dict:
    import gradio as gr

    from .engines import EnginePool

    pool = pool or EnginePool(engine, settings)
    table, names = adapter_table(settings)
    with gr.Row():
        with gr.Column(scale=2):
            kind = gr.Radio(list(KINDS), value="reward", label="Job", info=" · ".join(f"{k}: {v}" for k, v in KIND_HELP.items()))
            source = gr.Radio(["rankings store", "upload"], value="rankings store", label="Data")
            upload = gr.File(label="JSONL file", file_types=[".jsonl", ".txt", ".json"])
            out = gr.Textbox("my-adapter", label="Adapter name")
            with gr.Row():
                max_steps = gr.Slider(1, 500, value=20, step=1, label="steps")
                learning_rate = gr.Number(2e-4, label="learning rate")
            with gr.Row():
                beta = gr.Slider(0.0, 1.0, value=0.1, step=0.01, label="beta (DPO / PPO KL leash)")
                reward_adapter = gr.Dropdown([n for n in names], value=None, label="reward adapter (PPO)")
            start = gr.Button("Train", variant="primary", elem_id="train-start")
            stop = gr.Button("Stop (resumable: train again with the same name)", variant="stop")
        with gr.Column(scale=3):
            status = gr.Markdown("", elem_id="train-status")
            curve = gr.LinePlot(x="step", y="value", color="metric", label="Loss / reward / KL", height=320)
            adapters = gr.Dataframe(table, label="Adapters", interactive=False)
            refresh = gr.Button("Refresh", size="sm")
    gr.Markdown("### Base model and adapters, side by side")
    with gr.Row():
        prompt = gr.Textbox("How do I apologise to a friend I upset?", label="Prompt", scale=3)
        chosen = gr.CheckboxGroup(names, label="Adapters to compare with the base (up to 3)", scale=2)
    with gr.Row():
        temperature = gr.Slider(0, 2, value=0.0, step=0.05, label="temperature")
        max_tokens = gr.Slider(8, 256, value=64, step=8, label="max tokens")
        go = gr.Button("Compare", variant="primary")
    with gr.Row(equal_height=True):
        answers = [gr.Textbox(label=BASE if i == 0 else f"adapter {i}", lines=8, interactive=False, visible=i == 0)
                   for i in range(MAX_COMPARE)]

    def train_job(kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter, progress=gr.Progress()):
        yield from run_job(pool, settings, kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter,
                           progress=progress)

    job = start.click(train_job, [kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter],
                      [status, curve, adapters],
                      api_name="train", concurrency_limit=1, concurrency_id="train")
    stop.click(None, None, None, cancels=[job], api_name=False)

    def refreshed():
        t, n = adapter_table(settings)
        return t, gr.update(choices=n), gr.update(choices=n)

    refresh.click(refreshed, None, [adapters, reward_adapter, chosen], api_name=False)
    job.then(refreshed, None, [adapters, reward_adapter, chosen], api_name=False)
    # Its own queue: a limit of 1 in the shared "generate" group would lower the chat's limit too.
    go.click(partial(compare, pool), [prompt, chosen, temperature, max_tokens], answers, api_name="compare",
             concurrency_limit=1, concurrency_id="compare")
    return {}
