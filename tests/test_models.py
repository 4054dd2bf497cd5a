"""Model registry, the GGUF -> safetensors cache, and (quantized) loading, on the real default model.

    .venv/bin/python -m pytest tests/test_models.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gpt_demo.models import LoadConfig, load_model, quantization_config, resolve_device, resolve_model
from gpt_demo.models import gguf_cache
from gpt_demo.models.gguf_cache import MANIFEST, ensure_cache, verify_cache

QUESTION = "What is the capital of France?"


def ask_capital(loaded) -> str:
    from gpt_demo.api import Engine

    return Engine(loaded).chat(QUESTION, temperature=0, max_tokens=16).text


# -- registry -------------------------------------------------------------------------
def test_default_model_resolves_to_the_packaged_gguf():
    resolved = resolve_model("smollm2-135m-instruct")
    assert resolved.kind == "gguf"
    assert Path(resolved.location).is_file() and resolved.location.endswith(".gguf")


@pytest.mark.parametrize(
    "name, kind",
    [("HuggingFaceTB/SmolLM2-135M-Instruct", "hub"), ("my-org/my.model_v2", "hub")],
)
def test_hub_ids_resolve_online(name, kind):
    assert resolve_model(name).kind == kind


def test_hub_id_offline_is_refused_clearly():
    with pytest.raises(ValueError, match="offline"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", offline=True)


def test_local_directory_needs_config_json(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).kind == "local"


@pytest.mark.parametrize("bad", ["no-such-model", "/nope/model.gguf", "a/b/c"])
def test_unknown_model_names_what_is_allowed(bad):
    with pytest.raises(ValueError, match=r"model='" ):
        resolve_model(bad)


# -- loading --------------------------------------------------------------------------
def test_the_real_default_model_loads_and_answers(engine):
    info = engine.describe()
    assert info["model"] == "smollm2-135m-instruct"
    assert info["device"] == "cpu" and info["quantization"] == "none"
    assert engine.context_window == 8192
    assert "Paris" in ask_capital(engine.loaded)


def test_the_cache_is_complete_and_reused(engine, settings):
    source = Path(engine.loaded.source.location)
    cache = gguf_cache.cache_dir_for(source, settings.models_dir)
    assert verify_cache(cache) is None
    manifest = json.loads((cache / MANIFEST).read_text())
    assert "model.safetensors" in manifest["files"]
    before = (cache / "model.safetensors").stat().st_mtime_ns
    assert ensure_cache(source, settings.models_dir, progress=False) == cache
    assert (cache / "model.safetensors").stat().st_mtime_ns == before  # not rewritten


@pytest.fixture
def cache_copy(engine, settings, tmp_path):
    """A private copy of the session's converted cache, safe to damage."""
    source = Path(engine.loaded.source.location)
    models = tmp_path / "models"
    target = gguf_cache.cache_dir_for(source, models)
    shutil.copytree(gguf_cache.cache_dir_for(source, settings.models_dir), target)
    return source, models, target


def test_a_cache_without_manifest_is_half_written(cache_copy):
    _, _, target = cache_copy
    (target / MANIFEST).unlink()
    assert "no manifest" in verify_cache(target)


def test_a_crash_mid_conversion_leaves_nothing_that_loads(monkeypatch, tmp_path, engine):
    source = Path(engine.loaded.source.location)

    def crash(gguf_path, out_dir, progress=True):
        (Path(out_dir) / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(gguf_cache, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_cache(source, tmp_path / "models", progress=False)
    assert list((tmp_path / "models").iterdir()) == []  # no cache dir, no temp dir


@pytest.mark.slow
def test_a_corrupted_cache_is_detected_and_rebuilt(cache_copy):
    source, models, target = cache_copy
    weights = target / "model.safetensors"
    with open(weights, "r+b") as fh:  # flip bytes in the middle of the tensor data
        fh.seek(weights.stat().st_size // 2)
        fh.write(b"\x00\xff" * 64)
    assert "checksum" in verify_cache(target)
    rebuilt = ensure_cache(source, models, progress=False)
    assert rebuilt == target and verify_cache(target) is None
    loaded = load_model(LoadConfig(models_dir=models, device="cpu", offline=True, progress=False))
    assert "Paris" in ask_capital(loaded)


# -- quantization ---------------------------------------------------------------------
@pytest.mark.parametrize("quantize", ["8bit", "4bit"])
def test_quantized_loads_are_smaller_and_still_answer(engine, settings, quantize):
    cfg = LoadConfig(quantize=quantize, device="cpu", models_dir=settings.models_dir, offline=True, progress=False)
    loaded = load_model(cfg)
    assert loaded.quantization == quantize
    assert loaded.memory_footprint < 0.6 * engine.loaded.memory_footprint
    assert "Paris" in ask_capital(loaded)


def test_quantization_config_factory():
    assert quantization_config("none", "cpu") is None
    four = quantization_config("4bit", "cpu")
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert quantization_config("8bit", "cpu").load_in_8bit


def test_bad_load_settings_are_named():
    with pytest.raises(ValueError, match=r"quantize='3bit'.*none, 8bit, 4bit"):
        LoadConfig(quantize="3bit")
    with pytest.raises(ValueError, match=r"device='tpu'"):
        LoadConfig(device="tpu")


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(RuntimeError, match="pip install 'bitsandbytes"):
        quantization_config("4bit", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="device='cuda'"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


# -- GPU (skipped without CUDA) -------------------------------------------------------
@pytest.mark.gpu
def test_4bit_on_cuda_generates(settings):
    cfg = LoadConfig(quantize="4bit", device="cuda", models_dir=settings.models_dir, offline=True, progress=False)
    loaded = load_model(cfg)
    assert loaded.device == "cuda" and loaded.model.device.type == "cuda"
    assert "Paris" in ask_capital(loaded)


# -- the forward guard: ordinary passes share it, the eager-attention switch takes it alone ----------
def test_the_forward_guard_keeps_the_switch_exclusive_and_prefers_the_writer():
    """r1 holds the shared side; the writer waits; r2, arriving after the writer, waits behind it.

    Ordering is set by events and the guard's own state (``wait_until``), never by sleeping.
    """
    import threading

    from gpt_demo.models.guard import ForwardGuard

    guard, log = ForwardGuard(), []
    r1_in, release = threading.Event(), threading.Event()

    def reader(name, hold: bool):
        with guard.shared():
            log.append(f"{name} in")
            if hold:
                r1_in.set()
                assert release.wait(30)
            log.append(f"{name} out")

    def writer():
        with guard.exclusive():
            log.append("switch")

    r1 = threading.Thread(target=reader, args=("r1", True))
    w = threading.Thread(target=writer)
    r2 = threading.Thread(target=reader, args=("r2", False))
    try:
        r1.start()
        assert r1_in.wait(30)
        w.start()
        assert guard.wait_until(lambda s: s.writers_waiting == 1, timeout=30)  # the writer waits for r1
        r2.start()
        # Writer preference: r2 must queue behind the waiting writer, not join r1 on the shared side.
        assert guard.wait_until(lambda s: s.readers_waiting == 1, timeout=30), guard.state()
        assert log == ["r1 in"] and guard.state() == (1, False, 1, 1)
    finally:
        release.set()
        for t in (r1, w, r2):
            t.join(30)
    assert log == ["r1 in", "r1 out", "switch", "r2 in", "r2 out"]
    assert guard.state() == (0, False, 0, 0)


# -- one loader: devices, dtypes, and no import of training/ ----------------------------------------
def test_dtype_rules_are_one_table(monkeypatch):
    from gpt_demo.models import model_dtype

    assert model_dtype("cpu") is torch.float32 and model_dtype("cpu", trainable=True) is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert model_dtype("cuda") is torch.bfloat16  # inference on CUDA
    assert model_dtype("cuda", trainable=True) is torch.float32  # training: fp32 master weights, bf16 autocast
    assert model_dtype("cuda", "4bit") is torch.float32  # around bitsandbytes layers
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert model_dtype("cuda") is torch.float16


def test_bad_head_is_named():
    with pytest.raises(ValueError, match=r"head='value'.*causal, reward"):
        LoadConfig(head="value")


LOADS_WITHOUT_TRAINING = r"""
import json, sys
from pathlib import Path
from gpt_demo.models.loading import LoadConfig, load_model
from gpt_demo.models.adapters import list_adapters, write_card

home = Path(sys.argv[1])
base = dict(models_dir=home / "models", adapters_dir=home / "adapters", device="cpu", offline=True, progress=False)
loaded = load_model(LoadConfig(**base))
from peft import LoraConfig, get_peft_model  # a real (tiny) LoRA adapter with a card, as `gpt-demo sft` writes
peft_model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
adapter_dir = home / "adapters" / "tiny"
peft_model.save_pretrained(str(adapter_dir), safe_serialization=True)
write_card(adapter_dir, {"name": "tiny", "kind": "sft", "base_model": loaded.name})
chat = load_model(LoadConfig(**base, adapter="tiny"))        # adapter path: find, read card, apply, merge
reward = load_model(LoadConfig(**base, head="reward"))        # reward head path
trainable = load_model(LoadConfig(**base, trainable=True))    # training base path
print("NAMES", [a.name for a in list_adapters(home / "adapters")], chat.adapter, type(reward.model).__name__)
print("TRAINING", sorted(m for m in sys.modules if m.startswith("gpt_demo.training")))
"""


def test_models_never_imports_training(tmp_path, session_home, engine):
    """The loader (adapters and reward heads included) imports nothing from gpt_demo.training: no cycle."""
    import subprocess
    import sys

    home = tmp_path / "iso"
    home.mkdir()
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)  # the converted cache
    proc = subprocess.run([sys.executable, "-c", LOADS_WITHOUT_TRAINING, str(home)], capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NAMES ['tiny'] tiny LlamaForSequenceClassification" in proc.stdout, proc.stdout
    assert "TRAINING []" in proc.stdout, proc.stdout
