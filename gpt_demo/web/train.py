"""The Train tab: SFT, reward, DPO and PPO jobs on uploaded data or the rankings store, with a live curve;
the adapters they produce; and the base model against adapters, side by side.

``run_job`` is a generator: training runs on a worker thread and reports through ``on_progress``;
the generator turns those reports into status text and a growing loss / reward / KL table.
"""

from __future__ import annotations

import html
import queue
import threading
import time
from functools import partial

from .queues import model_queue
from .render import error_text
from .values import as_float, as_int

KINDS = ("sft", "reward", "dpo", "ppo")
KIND_HELP = {
    "sft": "Supervised fine-tuning: prompt/completion or chat JSONL (upload).",
    "reward": "Reward model from preference pairs: the rankings store or a prompt/chosen/rejected JSONL.",
    "dpo": "DPO from preference pairs: the rankings store or a JSONL file.",
    "ppo": "PPO against a reward adapter: a prompts file (one per line or JSONL with 'prompt').",
}
BASE = "(base model)"  # the Compare label of the app's own engine
MAX_COMPARE = 4
DEFAULT_STEPS = 40


class Job:
    """A running job: its worker thread, and the event that asks it to stop at its next step."""

    def __init__(self, thread: threading.Thread, cancel: threading.Event | None = None):
        self.thread, self.cancel = thread, cancel or threading.Event()


_RUNNING: dict[str, Job] = {}  # adapter name -> its job: one job per adapter directory
_RUNNING_LOCK = threading.Lock()


def save_every(steps: int) -> int:
    """Checkpoint interval of a web job: at least four checkpoints, so Stop then Train resumes near where it was."""
    return max(1, steps // 4)


def max_steps_limit(settings=None) -> int:
    """The most steps a web job may ask for (``Settings.limits.max_train_steps``, GPT_DEMO_MAX_TRAIN_STEPS)."""
    from ..limits import current_limits

    limits = getattr(settings, "limits", None) or current_limits()
    return limits.max_train_steps


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


def _job_args(kind: str, source: str, upload, out: str, max_steps, learning_rate, beta, reward_adapter,
              step_limit: int | None = None):
    """(data, keyword config) for ``gpt_demo.api.train_<kind>``; ValueError names what is missing.

    ``step_limit`` bounds the steps (default: the settings' ``max_train_steps``); the job checkpoints
    every ``save_every(steps)`` steps.
    """
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
    limit = step_limit or max_steps_limit()
    try:
        steps = as_int("steps", max_steps, 1, limit)
    except ValueError as exc:
        raise ValueError(f"{exc} (GPT_DEMO_MAX_TRAIN_STEPS)") from None
    config = {"max_steps": steps, "learning_rate": as_float("learning_rate", learning_rate, 0, 1),
              "save_steps": save_every(steps), "progress": False}
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
        base = getattr(pool, "base", None)
        if base is not None and base.loaded is None:  # a remote backend: its weights are on its server
            base.capabilities.require("training", base.backend)
        data, config = _job_args(kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter,
                                 step_limit=max_steps_limit(settings))
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    name = out.strip()
    events: "queue.Queue[tuple]" = queue.Queue()
    points: list[dict] = []
    job = Job(None)
    cancel = job.cancel

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

    worker = job.thread = threading.Thread(target=work, name=f"train-{kind}-{name}", daemon=True)
    with _RUNNING_LOCK:  # one writer per adapter directory, even after Stop (it ends at its next step)
        if name in _RUNNING:
            raise gr.Error(f"out={name!r} is still training (a stopped job ends at its next step); "
                           "wait for it or choose another name", print_exception=False)
        _RUNNING[name] = job
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
        except queue.Empty:  # yield now and then: Stop can close this generator only between yields
            yield status, gr.update(), gr.update()
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
            resumed = result.metrics.get("resumed_from_step")
            status = (f"Saved **{result.kind}** adapter **{result.name}** in {time.time() - started:.0f} s"
                      f"{f' (resumed from the checkpoint at step {resumed})' if resumed else ''}: "
                      f"{_metric_text(result.metrics)}")
            yield status, pd.DataFrame(points, columns=["step", "value", "metric"]), table
            return


def _remote_specs(settings) -> dict:
    """Configured remotes by id (``backends.catalog``); none when the file is broken (the pickers say why)."""
    from ..backends.catalog import configured_remotes

    try:
        return {c.label: c.spec for c in configured_remotes(settings)}
    except ValueError:
        return {}


def compare(pool, prompt: str, adapters: list[str], temperature, max_tokens):
    """One answer per chosen model (the base and up to three adapters or configured remotes), in the same order.

    ``pool`` is the app's ``EngineCache`` (base pinned). A model that cannot load gets its error in
    its box, a label that says so, and a warning; the other answers still show.
    """
    import gradio as gr

    if not prompt or not prompt.strip():
        raise gr.Error("prompt='' is not allowed; type a prompt to compare on", print_exception=False)
    try:
        temperature, max_tokens = as_float("temperature", temperature, 0, 2), as_int("max_tokens", max_tokens, 1)
    except ValueError as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    chosen = ([BASE] + [a for a in (adapters or []) if a != BASE])[:MAX_COMPARE]
    settings = pool.settings()
    from ..models.adapters import list_adapters

    # Only saved adapters by name: the name comes from the browser or the API, and the loader
    # would also take a directory path (a rater must not make the server load any folder).
    known = sorted(a.name for a in list_adapters(settings))
    remotes = _remote_specs(settings)  # by id only: a visitor cannot name a URL
    outs = []
    for name in chosen:
        try:
            if name != BASE and name not in known and name not in remotes:
                raise ValueError(f"adapter={name!r} not found; known: {', '.join(known + sorted(remotes)) or 'none yet'}")
            if name == BASE:
                engine = pool.base
            elif name in known:
                engine = pool.with_adapter(name)
            else:
                engine = pool.get(model=remotes[name])
        except (ValueError, RuntimeError, OSError) as exc:
            # no server paths for visitors: the data directory is named as its variable
            message = f"could not load {name}: {error_text(exc)}".replace(str(settings.home), "$GPT_DEMO_HOME")
            gr.Warning(html.escape(message, quote=False))  # the modal renders HTML; the name may come from the API
            outs.append(gr.update(value=f"({message})", label=f"{name} (not loaded)", visible=True))
            continue
        text = engine.chat(prompt, temperature=temperature, max_tokens=max_tokens, seed=0).text
        outs.append(gr.update(value=text, label=name, visible=True))
    outs += [gr.update(value="", visible=False)] * (MAX_COMPARE - len(outs))
    return outs


def delete(pool, settings, name):
    """Delete adapter ``name`` (admins only: the web event is ``gradio_fn(..., "adapters")``)."""
    import gradio as gr

    from ..models.adapters import delete_adapter

    if not name:
        raise gr.Error("adapter=None is not allowed; pick the adapter to delete", print_exception=False)
    with _RUNNING_LOCK:
        if name in _RUNNING:
            raise gr.Error(f"adapter={name!r} is training; stop it and wait for it to end first",
                           print_exception=False)
        try:
            delete_adapter(name, settings)
        except (ValueError, FileNotFoundError) as exc:
            raise gr.Error(error_text(exc), print_exception=False) from None
    if pool is not None:
        pool.forget(name)
    return f"Deleted adapter **{name}**."


def add_remote_model(settings, rid: str, spec: str, key_env: str):
    """Admins: connect to a remote OpenAI-compatible server, then add it to ``models.toml`` for every picker."""
    import gradio as gr

    from ..backends.catalog import add_remote, check_remote
    from ..backends.registry import parse_spec
    from ..backends.remote import RemoteEngine
    from ..config import read_secret

    try:
        rid, spec, key_env = (rid or "").strip(), (spec or "").strip(), (key_env or "").strip() or None
        check_remote(rid, spec, key_env)
        parsed = parse_spec(spec)
        env = key_env or parsed.kind.key_env
        remote = RemoteEngine(parsed, api_key=read_secret(env) if env else None, settings=settings, retries=1)
        add_remote(settings, rid, str(remote.spec), key_env)
    except (ValueError, RuntimeError, OSError) as exc:
        raise gr.Error(error_text(exc), print_exception=False) from None
    return f"Added remote **{rid}** ({remote.spec}); the model pickers offer it now."


def access_updates(access, user):
    """On page load, per user: the Train and Delete buttons, and the note that says why they are off."""
    import gradio as gr

    can_train, can_delete = access.allowed(user, "train"), access.allowed(user, "adapters")
    note = "" if can_train else (access.locked_note() or access.refusal(user, "train"))
    return (gr.update(interactive=can_train), gr.update(interactive=can_delete),
            gr.update(value=note, visible=bool(note)))


def build(engine, store, state, *, pool=None, settings=None, access=None, jobs: int = 2) -> dict:
    import gradio as gr

    from ..api import EngineCache
    from .roles import Access, AccessHolder, gradio_fn

    pool = pool or EngineCache(base=engine, settings=settings, progress=False)
    access = access or AccessHolder(Access())
    table, names = adapter_table(settings)
    limit = max_steps_limit(settings)
    locked = access.access.locked_note()
    lock_note = gr.Markdown(locked or "", visible=locked is not None, elem_id="train-locked")
    with gr.Row():
        with gr.Column(scale=2):
            kind = gr.Radio(list(KINDS), value="reward", label="Job", info=" · ".join(f"{k}: {v}" for k, v in KIND_HELP.items()))
            source = gr.Radio(["rankings store", "upload"], value="rankings store", label="Data")
            upload = gr.File(label="JSONL file", file_types=[".jsonl", ".txt", ".json"])
            out = gr.Textbox("my-adapter", label="Adapter name")
            with gr.Row():
                max_steps = gr.Slider(1, limit, value=min(DEFAULT_STEPS, limit), step=1, label="steps",
                                      info="checkpoints every steps/4: Stop, then Train again with the same "
                                           "name, resumes")
                learning_rate = gr.Number(2e-4, label="learning rate")
            with gr.Row():
                beta = gr.Slider(0.0, 1.0, value=0.1, step=0.01, label="beta (DPO / PPO KL leash)")
                # custom values: one trained a moment ago (by another session, or over the API) is not in
                # this page's list yet; the trainer checks the name
                reward_adapter = gr.Dropdown([n for n in names], value=None, label="reward adapter (PPO)",
                                             allow_custom_value=True)
            start = gr.Button("Train", variant="primary", elem_id="train-start", interactive=locked is None)
            stop = gr.Button("Stop (resumable: train again with the same name)", variant="stop")
        with gr.Column(scale=3):
            status = gr.Markdown("", elem_id="train-status")
            curve = gr.LinePlot(x="step", y="value", color="metric", label="Loss / reward / KL", height=320)
            adapters = gr.Dataframe(table, label="Adapters", interactive=False)
            with gr.Row():
                refresh = gr.Button("Refresh", size="sm")
                doomed = gr.Dropdown(names, value=None, label="adapter to delete", scale=2, allow_custom_value=True)
                remove = gr.Button("Delete", size="sm", variant="stop", interactive=locked is None)
    with gr.Accordion("Add a remote model (vLLM, llama.cpp, Ollama, any OpenAI-compatible server)", open=False):
        with gr.Row():
            remote_id = gr.Textbox(label="id", placeholder="qwen-7b", scale=1)
            remote_spec = gr.Textbox(label="SCHEME:URL#MODEL", placeholder="vllm:http://gpu-box:8000/v1#Qwen/"
                                     "Qwen2.5-7B-Instruct", scale=3)
            remote_key = gr.Textbox(label="key variable (optional)", placeholder="VLLM_API_KEY", scale=1)
            remote_add = gr.Button("Connect and add", scale=1, interactive=locked is None)
        remote_status = gr.Markdown("")
    gr.Markdown("### Base model and adapters, side by side")
    with gr.Row():
        prompt = gr.Textbox("How do I apologise to a friend I upset?", label="Prompt", scale=3)
        chosen = gr.CheckboxGroup(names + sorted(_remote_specs(pool.settings())), scale=2,
                                  label="Adapters and remote models to compare with the base (up to 3)")
    with gr.Row():
        temperature = gr.Slider(0, 2, value=0.0, step=0.05, label="temperature")
        max_tokens = gr.Slider(8, 256, value=64, step=8, label="max tokens")
        go = gr.Button("Compare", variant="primary")
    memory = gr.Markdown(pool.summary(), elem_id="train-memory")  # adapters loaded for Compare cost memory
    with gr.Row(equal_height=True):
        answers = [gr.Textbox(label=BASE if i == 0 else f"adapter {i}", lines=8, interactive=False, visible=i == 0)
                   for i in range(MAX_COMPARE)]

    def train_job(kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter, progress=gr.Progress()):
        yield from run_job(pool, settings, kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter,
                           progress=progress)

    job = start.click(gradio_fn(train_job, access, "train"),
                      [kind, source, upload, out, max_steps, learning_rate, beta, reward_adapter],
                      [status, curve, adapters],
                      api_name="train", **model_queue(jobs))
    stop.click(None, None, None, cancels=[job], api_name=False)

    def refreshed():
        t, n = adapter_table(settings)
        return t, gr.update(choices=n), gr.update(choices=n + sorted(_remote_specs(pool.settings()))), \
            gr.update(choices=n, value=None)

    lists = [adapters, reward_adapter, chosen, doomed]
    refresh.click(refreshed, None, lists, api_name=False)
    job.then(refreshed, None, lists, api_name=False)
    removed = remove.click(gradio_fn(partial(delete, pool, settings), access, "adapters"), [doomed], [status],
                           api_name="delete_adapter")
    removed.success(refreshed, None, lists, api_name=False)
    remote_add.click(gradio_fn(partial(add_remote_model, settings), access, "models"),
                     [remote_id, remote_spec, remote_key], [remote_status], api_name="add_remote")
    # Compare and Train run the model: they count against the same budget as chat (web.queues).
    compared = go.click(partial(compare, pool), [prompt, chosen, temperature, max_tokens], answers, api_name="compare",
                        **model_queue(jobs))
    compared.then(pool.summary, None, memory, api_name=False, show_progress="hidden")
    return {"load": [(gradio_fn(access_updates, access, pass_user=True), None, [start, remove, lock_note])]}
