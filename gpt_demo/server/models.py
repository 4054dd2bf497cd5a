"""Model ids as the API names them, and the work behind /v1/models, /v1/embeddings and /v1/moderations.

    smollm2-135m-instruct            the base chat model (the engine the server was started with)
    smollm2-135m-instruct:my-sft     a trained chat adapter on it (``gpt-demo adapters``)
    ft:smollm2-135m-instruct:S:ID    a fine-tuning job's model (``/v1/fine_tuning/jobs``)
    all-minilm-l6-v2                 the sentence embedder (the default of /v1/embeddings)

Every function here blocks (loads, embeds, moderates); the routes run them in the gate's threads.
"""

from __future__ import annotations

import base64
import time
from datetime import datetime

from .errors import APIError, bad_request

EMBEDDING_MODEL = "all-minilm-l6-v2"
MODERATION_MODELS = ("omni-moderation-latest", "text-moderation-latest", "text-moderation-stable")
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's bound per request; Settings.limits.max_texts may be lower
OWNER = "gpt-demo"


def not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist or you do not have access to it.", param="model",
                    code="model_not_found")


def _created(iso: str, default: int) -> int:
    try:
        return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").timestamp())
    except (TypeError, ValueError):
        return default


def chat_adapters(settings) -> dict:
    """Trained chat adapters (sft, ppo, dpo) by name; reward models are not chat models."""
    from ..api import list_adapters
    from ..models.adapters import CHAT_KINDS

    return {a.name: a for a in list_adapters(settings) if a.kind in CHAT_KINDS}


def model_objects(base: str, settings, created: int) -> list[dict]:
    rows = [{"id": base, "object": "model", "created": created, "owned_by": OWNER}]
    for name, info in sorted(chat_adapters(settings).items()):
        model_id = info.card.get("fine_tuned_model") or f"{base}:{name}"  # a fine-tuning job's: ft:BASE:SUFFIX:JOBID
        rows.append({"id": model_id, "object": "model", "created": _created(info.created_at, created),
                     "owned_by": "user"})
    rows.append({"id": EMBEDDING_MODEL, "object": "model", "created": created, "owned_by": OWNER})
    return rows


def adapter_name(base: str, model: str) -> str | None:
    """``NAME`` of ``BASE:NAME``, else None."""
    head, sep, name = model.partition(":")
    return name if sep and head == base and name else None


def ft_adapter_name(settings, model: str) -> str | None:
    """The adapter behind a fine-tuned model id (``ft:BASE:SUFFIX:JOBID``, from its card), else None."""
    if not isinstance(model, str) or not model.startswith("ft:"):
        return None
    return next((name for name, info in chat_adapters(settings).items()
                 if info.card.get("fine_tuned_model") == model), None)


def chat_engine(cache, base: str, model, settings):
    """The engine for ``model``: the base, or the base with an adapter through the shared engine cache."""
    if not isinstance(model, str) or not model:
        raise bad_request(f"model={model!r} is not allowed; you must provide a model parameter", "model")
    if model == base:
        return cache.base
    name = adapter_name(base, model) or ft_adapter_name(settings, model)
    if name is None or name not in chat_adapters(settings):
        raise not_found(model)
    return cache.with_adapter(name)


# -- embeddings -----------------------------------------------------------------------
def embed(engine, texts: list[str], dimensions: int | None, encoding_format: str, model: str) -> dict:
    """OpenAI's embeddings body; ``engine`` None means MiniLM. Vectors are L2-normalised float32."""
    import numpy as np

    from .. import api
    from ..embeddings import CHAT_MAX_TOKENS, minilm_token_counts

    if engine is None:
        vectors = api.embed(texts, "minilm", progress=False)
        tokens = sum(minilm_token_counts(texts))  # under the embedder's tokenizer lock
    else:
        vectors = api.embed(texts, model="chat", engine=engine, progress=False)
        tokens = sum(min(len(row), CHAT_MAX_TOKENS)
                     for row in engine.tokenizer(texts, add_special_tokens=False)["input_ids"])
    size = vectors.shape[1]
    if dimensions is not None:
        if dimensions > size:
            raise bad_request(f"dimensions={dimensions} is out of range; allowed: 1 <= dimensions <= {size} "
                              f"for {model}", "dimensions")
        # text-embedding-3's rule: keep the first d dimensions and re-normalise.
        vectors = vectors[:, :dimensions]
        vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    data = []
    for i, row in enumerate(vectors):
        value = base64.b64encode(row.tobytes()).decode("ascii") if encoding_format == "base64" else row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def moderate(texts: list[str]) -> dict:
    """OpenAI's moderation body; ``model`` names the classifier that really ran."""
    from ..moderation import moderation_response

    return moderation_response(texts)


def now() -> int:
    return int(time.time())
