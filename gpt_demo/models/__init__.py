"""Model specs, the GGUF-to-safetensors cache, and the one loader: chat models, adapters, reward models, training bases.

    >>> from gpt_demo.models import LoadConfig, load_model
    >>> loaded = load_model(LoadConfig())          # doctest: +SKIP
    >>> loaded.name
    'smollm2-135m-instruct'
"""

from .loading import LoadConfig, LoadedModel, load_model, model_dtype, quantization_config, resolve_device
from .registry import REGISTRY, ModelSpec, ResolvedModel, list_models, resolve_model

__all__ = [
    "LoadConfig",
    "LoadedModel",
    "load_model",
    "model_dtype",
    "quantization_config",
    "resolve_device",
    "REGISTRY",
    "ModelSpec",
    "ResolvedModel",
    "list_models",
    "resolve_model",
]
