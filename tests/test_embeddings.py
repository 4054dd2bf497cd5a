"""Embeddings: the packaged MiniLM and the chat model's pooled hidden states, search, projections, analogies.

    .venv/bin/python -m pytest tests/test_embeddings.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gpt_demo import embeddings
from gpt_demo.embeddings import analogy, embed, project, search

CAT = "A cat is sleeping on the sofa."
CAT_PARAPHRASE = "A kitten naps on the couch."
UNRELATED = "The central bank raised interest rates again."


@pytest.mark.parametrize("model", ["minilm", "chat"])
def test_vectors_are_normalised_float32_and_identical_texts_score_one(engine, model):
    vectors = engine.embed([CAT, CAT, CAT_PARAPHRASE, UNRELATED], model=model)
    dim = 384 if model == "minilm" else engine.loaded.model.config.hidden_size
    assert vectors.shape == (4, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = vectors @ vectors.T
    assert cos[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert cos[0, 2] > cos[0, 3] and cos[2, 0] > cos[2, 3]  # paraphrase closer than unrelated


def test_minilm_matches_sentence_transformers_exactly():
    texts = [CAT, CAT_PARAPHRASE, UNRELATED] * 30  # > 64 texts: the batched, progress-bar path
    ours = embed(texts)
    direct = embeddings.minilm_model().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert np.array_equal(ours, direct)


def test_a_string_is_one_text_and_order_is_kept():
    single = embed(CAT)
    both = embed([UNRELATED, CAT])
    assert single.shape == (1, 384)
    assert np.allclose(both[1], single[0], atol=1e-6)


@pytest.mark.parametrize("bad, where", [([], "texts=\\[\\]"), (["ok", "   "], "texts\\[1\\]"), (["ok", ""], "texts\\[1\\]"),
                                        (["ok", None], "texts\\[1\\]=None")])
def test_empty_whitespace_and_non_strings_are_named(bad, where):
    with pytest.raises(ValueError, match=where):
        embed(bad)


def test_very_long_input_is_truncated_not_refused():
    long_text = CAT + " " + " ".join(["filler"] * 5000)
    vector = embed(long_text)[0]
    assert np.isfinite(vector).all() and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    # Only the first 256 word pieces count: whatever follows them changes nothing.
    assert np.allclose(vector, embed(long_text + " " + UNRELATED)[0], atol=1e-6)


def test_search_ranks_by_cosine():
    corpus = [UNRELATED, CAT_PARAPHRASE, "Dogs bark at the mailman.", "Interest rates went up."]
    hits = search("a feline resting on furniture", corpus, top_k=3)
    assert [h.index for h in hits][0] == 1 and hits[0].text == CAT_PARAPHRASE
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and len(hits) == 3
    assert len(search("x", corpus, top_k=10)) == 4
    with pytest.raises(ValueError, match="top_k=0"):
        search("x", corpus, top_k=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_pca_projection_shapes_and_structure(dims):
    texts = [CAT, CAT_PARAPHRASE, "A cat sits on a chair.", UNRELATED, "Inflation rose last quarter.", "Stocks fell."]
    coords = project(texts, dims=dims)
    assert coords.shape == (6, dims) and coords.dtype == np.float32
    cats, money = coords[:3].mean(0), coords[3:].mean(0)
    spread = max(np.linalg.norm(coords[:3] - cats, axis=1).max(), np.linalg.norm(coords[3:] - money, axis=1).max())
    assert np.linalg.norm(cats - money) > spread  # the two topics form two clusters
    assert np.array_equal(coords, project(texts, dims=dims))  # deterministic signs
    assert project(embed([CAT]), dims=2).shape == (1, 2)


def test_bad_projection_arguments_are_named():
    with pytest.raises(ValueError, match="dims=4"):
        project([CAT, UNRELATED], dims=4)
    with pytest.raises(ValueError, match="method='tsne'"):
        project([CAT, UNRELATED], method="tsne")


def test_king_minus_man_plus_woman_is_queen():
    hits = analogy("man", "king", "woman")
    assert hits[0].text == "queen"
    assert {"man", "king", "woman"}.isdisjoint(h.text for h in hits)
    assert analogy("france", "paris", "germany")[0].text == "berlin"


def test_cli_embed_json_and_search():
    cmd = [sys.executable, "-m", "gpt_demo", "embed", CAT, CAT_PARAPHRASE, UNRELATED]
    proc = subprocess.run(cmd + ["--project", "2", "--json"], capture_output=True, text=True, timeout=300)
    rows = json.loads(proc.stdout)
    assert [len(r["coords"]) for r in rows] == [2, 2, 2] and rows[0]["text"] == CAT
    proc = subprocess.run(cmd + ["--search", "kitten", "--top-k", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and CAT_PARAPHRASE in proc.stdout and UNRELATED not in proc.stdout
