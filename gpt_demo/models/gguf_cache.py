"""One-time conversion of a GGUF file into a safetensors cache that loads in seconds.

    >>> from gpt_demo.models.gguf_cache import ensure_cache        # doctest: +SKIP
    >>> ensure_cache("model.gguf", Path("~/.cache/gpt-demo/models").expanduser())  # doctest: +SKIP
    PosixPath('.../model-1a2b3c4d5e6f7a8b')

transformers de-quantizes a GGUF on every load (~30-50 s here). We do it once and
``save_pretrained`` the float weights. The cache is built in a temporary sibling
directory and renamed into place only after a manifest (sizes and SHA-256 of every
file) is written, so a crash mid-conversion leaves nothing that loads; a cache whose
files no longer match their manifest is deleted and rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from ..util import file_sha256

log = logging.getLogger(__name__)

MANIFEST = "gpt-demo-manifest.json"
FORMAT_VERSION = 1


def cache_dir_for(gguf_path: Path, models_dir: Path) -> Path:
    """The cache directory for this exact GGUF content (its name carries a content hash)."""
    gguf_path = Path(gguf_path)
    return Path(models_dir) / f"{gguf_path.stem}-{file_sha256(gguf_path)[:16]}"


def verify_cache(directory: Path) -> str | None:
    """None when ``directory`` is a complete cache, else the reason it is not."""
    manifest_path = Path(directory) / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (conversion never finished)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable manifest: {exc}"
    if manifest.get("format") != FORMAT_VERSION:
        return f"cache format {manifest.get('format')} is not {FORMAT_VERSION}"
    for name, expected in files.items():
        path = Path(directory) / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['size']}"
        if file_sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _write_manifest(directory: Path, source: Path) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(directory.iterdir())
        if p.is_file()
    }
    manifest = {"format": FORMAT_VERSION, "source": str(source), "created": time.time(), "files": files}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, directory / MANIFEST)


def convert_gguf(gguf_path: Path, out_dir: Path, progress: bool = True) -> None:
    """De-quantize ``gguf_path`` with transformers and save it as safetensors in ``out_dir``."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    steps = ["tokenizer", "de-quantize weights", "write safetensors", "checksum"]
    with tqdm(total=len(steps), desc=f"One-time conversion of {gguf_path.name}", disable=not progress) as bar:
        bar.set_postfix_str(steps[0])
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        bar.update()
        bar.set_postfix_str(steps[1])
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        bar.update()
        bar.set_postfix_str(steps[2])
        # The weights are plain floats now; drop the GGUF quantizer so save_pretrained accepts them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        bar.update()
        bar.set_postfix_str(steps[3])
        _write_manifest(out_dir, gguf_path)
        bar.update()


def ensure_cache(gguf_path: Path, models_dir: Path, progress: bool = True) -> Path:
    """Return a verified safetensors cache for ``gguf_path``, converting (or rebuilding) when needed."""
    target = cache_dir_for(gguf_path, models_dir)
    if target.exists():
        problem = verify_cache(target)
        if problem is None:
            return target
        log.warning("model cache %s is unusable (%s); rebuilding it", target, problem)
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        convert_gguf(Path(gguf_path), tmp, progress=progress)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first; keep its copy if it is whole.
            if verify_cache(target) is not None:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
