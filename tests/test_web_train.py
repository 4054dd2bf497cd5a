"""The web app's Train tab: a real (tiny) SFT job through the handler, the adapter list, side-by-side answers.

    .venv/bin/python -m pytest tests/test_web_train.py -q
"""

from __future__ import annotations

import json

import pytest

gr = pytest.importorskip("gradio")
pytest.importorskip("peft")
pytest.importorskip("trl")

from gpt_demo.web import train  # noqa: E402
from gpt_demo.api import EngineCache  # noqa: E402
from gpt_demo.web.train import BASE  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLES = [{"prompt": f"What is {a} plus {b}?", "completion": f"{a} plus {b} is {a + b}."}
            for a in range(1, 5) for b in range(1, 3)]


def test_job_arguments_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match="out='' is not allowed"):
        train._job_args("sft", "upload", "x.jsonl", " ", 5, 1e-4, 0.1, None)
    with pytest.raises(ValueError, match="source='rankings store' is not allowed for sft"):
        train._job_args("sft", "rankings store", None, "a", 5, 1e-4, 0.1, None)
    with pytest.raises(ValueError, match="file=None is not allowed"):
        train._job_args("dpo", "upload", None, "a", 5, 1e-4, 0.1, None)
    with pytest.raises(ValueError, match="reward=None is not allowed"):
        train._job_args("ppo", "upload", "p.txt", "a", 5, 1e-4, 0.1, None)
    data, config = train._job_args("ppo", "upload", "p.txt", "a", 5, 1e-4, 0.1, "rm")
    assert data == "p.txt" and config["steps"] == 5 and config["reward"] == "rm" and "max_steps" not in config


def test_web_jobs_checkpoint_every_quarter_and_their_steps_are_bounded_by_the_settings():
    from gpt_demo.config import Settings

    _, config = train._job_args("sft", "upload", "x.jsonl", "a", 40, 1e-4, 0.1, None)
    assert (config["max_steps"], config["save_steps"]) == (40, 10)  # Stop then Train resumes from step 10, 20, 30
    assert [train.save_every(n) for n in (1, 3, 4, 9, 500)] == [1, 1, 1, 2, 125]
    _, config = train._job_args("ppo", "upload", "p.txt", "a", 8, 1e-4, 0.1, "rm")
    assert (config["steps"], config["save_steps"]) == (8, 2)
    limit = Settings.from_env({"GPT_DEMO_MAX_TRAIN_STEPS": "30"})
    assert train.max_steps_limit(limit) == 30 and train.max_steps_limit(Settings()) == 500
    with pytest.raises(ValueError, match=r"^steps=31 is not allowed; allowed: a whole number from 1 to 30 "
                                         r"\(GPT_DEMO_MAX_TRAIN_STEPS\)$"):
        train._job_args("sft", "upload", "x.jsonl", "a", 31, 1e-4, 0.1, None, step_limit=30)
    with pytest.raises(gr.Error, match=r"steps=31 is not allowed"):  # the handler, called as the API calls it
        list(train.run_job(None, limit, "sft", "upload", "x.jsonl", "a", 31, 1e-4, 0.1, None))


def test_an_sft_job_streams_progress_saves_an_adapter_and_compares_side_by_side(engine, tmp_path, settings,
                                                                              gpt_demo_home):
    from gpt_demo.config import Settings

    home = Settings.from_env(device="cpu", offline=True)
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    pool = EngineCache(base=engine, settings=home, progress=False)
    updates = list(train.run_job(pool, home, "sft", "upload", str(data), "web-sft", 3, 5e-4, 0.1, None))
    status, curve, table = updates[-1]
    assert status.startswith("Saved **sft** adapter **web-sft**")
    assert any(u[0].startswith("**sft** step") for u in updates)  # progress arrived while it ran
    assert len(curve) > 0 and {"step", "value", "metric"} <= set(curve.columns)
    assert "web-sft" in list(table["name"])
    outs = train.compare(pool, "What is 2 plus 1?", ["web-sft"], 0.0, 12)
    # The adapter really loaded: its own label (a failed load says "(not loaded)") and the cache holds it.
    assert [o["label"] for o in outs[:2]] == [BASE, "web-sft"] and all(o["value"] for o in outs[:2])
    assert outs[2]["visible"] is False
    assert [(e["adapter"], e["pinned"]) for e in pool.describe()["engines"]] == [(None, True), ("web-sft", False)]
    assert pool.with_adapter("web-sft").loaded.adapter == "web-sft"
    merged = pool.with_adapter("web-sft").loaded
    assert merged.lean is not None and merged.lean.weights == "bf16"  # an adapter generates on the bf16 lean path
    # The base and one merged copy, each with its lean copies (int4 for the base, bf16 for the adapter).
    assert pool.memory_bytes() == engine.loaded.memory_footprint + merged.memory_footprint
    assert merged.memory_footprint > engine.loaded.memory_footprint
    assert "web-sft" in pool.summary() and "GPT_DEMO_MAX_ENGINES" in pool.summary()


def test_compare_shows_an_adapter_that_fails_to_load(engine, gpt_demo_home):
    """A missing adapter must not pass for an answer: its box says it did not load, and a warning names it."""
    from gpt_demo.config import Settings

    pool = EngineCache(base=engine, settings=Settings.from_env(device="cpu", offline=True), progress=False)
    with pytest.warns(UserWarning, match="could not load no-such-adapter: adapter='no-such-adapter' not found"):
        outs = train.compare(pool, "What is 2 plus 1?", ["no-such-adapter"], 0.0, 4)
    assert outs[0]["label"] == BASE and outs[0]["value"]
    assert outs[1]["label"] == "no-such-adapter (not loaded)"
    assert outs[1]["value"].startswith("(could not load no-such-adapter: adapter='no-such-adapter' not found")
    assert pool.describe()["loaded"] == 0
    from gpt_demo.web.app import _header

    assert "Compare keeps at most 3 adapter models loaded besides it" in _header(engine, pool)  # memory stated


def test_a_malformed_file_fails_with_its_line_and_saves_nothing(engine, tmp_path, gpt_demo_home):
    from gpt_demo.config import Settings

    home = Settings.from_env(device="cpu", offline=True)
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(EXAMPLES[0]) + "\n{not json\n")
    with pytest.raises(gr.Error, match=r"sft failed: .*bad.jsonl:2: bad JSON"):
        list(train.run_job(EngineCache(base=engine, settings=home), home, "sft", "upload", str(data), "broken", 2, 1e-4, 0.1, None))
    table, names = train.adapter_table(home)
    assert "broken" not in names


def test_a_second_job_on_a_name_still_training_is_refused(tmp_path):
    import threading

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps(EXAMPLES[0]) + "\n")
    busy = threading.Event()
    worker = threading.Thread(target=busy.wait)
    worker.start()
    train._RUNNING["busy-adapter"] = train.Job(worker)
    try:
        with pytest.raises(gr.Error, match="out='busy-adapter' is still training"):
            list(train.run_job(None, None, "sft", "upload", str(data), "busy-adapter", 2, 1e-4, 0.1, None))
    finally:
        train._RUNNING.pop("busy-adapter", None)
        busy.set()
        worker.join()


def test_stop_then_train_again_under_the_same_name_resumes_from_the_checkpoint_over_http(engine, tmp_path,
                                                                                       gpt_demo_home, monkeypatch):
    """/train for 8 steps (a checkpoint every 2), Stop at step 5 over HTTP, /train again: it resumes at step 4."""
    import threading

    from gradio_client import Client, handle_file

    from gpt_demo import api
    from gpt_demo.config import Settings
    from gpt_demo.web.app import build_app, launch
    from gpt_demo.web.serve_config import ServeConfig

    settings = Settings.from_env(device="cpu", offline=True)
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    real, runs, at_step_5 = api.train_sft, [], threading.Event()

    def train_sft(data, out, *, on_progress=None, **config):
        """The real trainer; the first run holds at step 5 until Stop has reached the job (no race, no sleep)."""
        runs.append((train._RUNNING[out], config))
        job, first = runs[-1][0], len(runs) == 1

        def progress(step, total, metrics):
            on_progress(step, total, metrics)  # raises JobStopped once Stop has reached the job
            if first and step == 5:
                at_step_5.set()
                assert job.cancel.wait(120), "Stop did not reach the training job"

        return real(data, out, on_progress=progress, **config)

    monkeypatch.setattr(api, "train_sft", train_sft)
    app = build_app(engine, settings=settings, serve=ServeConfig(port=0))
    url = launch(app, ServeConfig(port=0), block=False, quiet=True)
    try:
        client = Client(url, verbose=False)
        args = ("sft", "upload", handle_file(str(data)), "web-resume", 8, 5e-4, 0.1, None)
        first = client.submit(*args, api_name="/train")
        while not at_step_5.wait(1):  # the event; each second, see whether the job failed instead
            if first.done():
                first.result()  # raises the job's error
                raise AssertionError(f"the first job ended before step 5: {first.outputs()[-1:]}")
        first.cancel()  # what the Stop button does
        runs[0][0].thread.join(timeout=300)  # the stopped worker ends at its next step
        assert not runs[0][0].thread.is_alive() and "web-resume" not in train._RUNNING
        assert runs[0][1]["save_steps"] == 2
        checkpoints = (gpt_demo_home / "adapters" / "web-resume" / "checkpoints").glob("checkpoint-*")
        assert sorted(p.name for p in checkpoints) == ["checkpoint-4"]  # saved at 2 and 4; Stop came at 5

        second = client.submit(*args, api_name="/train")
        second.result()  # raises the job's error, if any
        statuses = [u[0] for u in second.outputs()]
        steps = [int(s.split("step ")[1].split("/")[0]) for s in statuses if s.startswith("**sft** step")]
        assert steps and steps[0] == 5 and steps[-1] == 8, statuses  # from the checkpoint, not from 0
        assert statuses[-1].startswith("Saved **sft** adapter **web-resume**")
        assert "(resumed from the checkpoint at step 4)" in statuses[-1] and "resumed_from_step=4" in statuses[-1]
    finally:
        app.close()
