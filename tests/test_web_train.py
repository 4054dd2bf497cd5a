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
from gpt_demo.web.engines import BASE, EnginePool  # noqa: E402

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


def test_an_sft_job_streams_progress_saves_an_adapter_and_compares_side_by_side(engine, tmp_path, settings,
                                                                              gpt_demo_home):
    from gpt_demo.config import Settings

    home = Settings.from_env(device="cpu", offline=True)
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    pool = EnginePool(engine, home)
    updates = list(train.run_job(pool, home, "sft", "upload", str(data), "web-sft", 3, 5e-4, 0.1, None))
    status, curve, table = updates[-1]
    assert status.startswith("Saved **sft** adapter **web-sft**")
    assert any(u[0].startswith("**sft** step") for u in updates)  # progress arrived while it ran
    assert len(curve) > 0 and {"step", "value", "metric"} <= set(curve.columns)
    assert "web-sft" in list(table["name"])
    outs = train.compare(pool, "What is 2 plus 1?", ["web-sft"], 0.0, 12)
    assert [o["label"] for o in outs[:2]] == [BASE, "web-sft"] and all(o["value"] for o in outs[:2])
    assert outs[2]["visible"] is False


def test_a_malformed_file_fails_with_its_line_and_saves_nothing(engine, tmp_path, gpt_demo_home):
    from gpt_demo.config import Settings

    home = Settings.from_env(device="cpu", offline=True)
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(EXAMPLES[0]) + "\n{not json\n")
    with pytest.raises(gr.Error, match=r"sft failed: .*bad.jsonl:2: bad JSON"):
        list(train.run_job(EnginePool(engine, home), home, "sft", "upload", str(data), "broken", 2, 1e-4, 0.1, None))
    table, names = train.adapter_table(home)
    assert "broken" not in names


def test_a_reward_job_on_the_rankings_store_over_http(engine, tmp_path, gpt_demo_home):
    """The Train tab end to end: rankings in the store -> /train (reward) -> a saved adapter in the table."""
    from gradio_client import Client

    from gpt_demo.config import Settings
    from gpt_demo.feedback import FeedbackStore
    from gpt_demo.web.app import build_app, launch
    from gpt_demo.web.serve_config import ServeConfig

    settings = Settings.from_env(device="cpu", offline=True)
    store = FeedbackStore.open(settings)
    for i, topic in enumerate(["the weather", "my homework", "a recipe", "the train times", "a movie", "my garden"]):
        store.add_ranking(f"Can you help me with {topic}?",
                          [f"Of course! I'd be glad to help with {topic}.", "No. Figure it out yourself."], [1, 2],
                          model=engine.model_name)
    app = build_app(engine, store=store, settings=settings)
    url = launch(app, ServeConfig(port=0), block=False, quiet=True)
    try:
        client = Client(url, verbose=False)
        updates = list(client.submit("reward", "rankings store", None, "web-rm", 3, 5e-4, 0.1, None, api_name="/train"))
        status, curve, table = updates[-1]
        assert status.startswith("Saved **reward** adapter **web-rm**"), status
        assert "web-rm" in [row[0] for row in table["data"]]
    finally:
        app.close()


def test_a_second_job_on_a_name_still_training_is_refused(tmp_path):
    import threading

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps(EXAMPLES[0]) + "\n")
    busy = threading.Event()
    worker = threading.Thread(target=busy.wait)
    worker.start()
    train._RUNNING["busy-adapter"] = worker
    try:
        with pytest.raises(gr.Error, match="out='busy-adapter' is still training"):
            list(train.run_job(None, None, "sft", "upload", str(data), "busy-adapter", 2, 1e-4, 0.1, None))
    finally:
        train._RUNNING.pop("busy-adapter", None)
        busy.set()
        worker.join()
