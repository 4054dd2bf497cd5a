"""Embeddings: the packaged MiniLM and the chat model's pooled hidden states, search, projections, analogies.

    .venv/bin/python -m pytest tests/test_embeddings.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gpt_demo import api, embeddings
from gpt_demo.cli import main
from gpt_demo.embeddings import analogy, embed, project, search

CAT = "A cat is sleeping on the sofa."
CAT_PARAPHRASE = "A kitten naps on the couch."
UNRELATED = "The central bank raised interest rates again."
# Lengths from 2 to ~120 word pieces, so sorting by length really reorders the batches.
VARIED = [f"{i} " + " ".join(["word"] * (i % 7) * (i % 5) * 3) + f" sentence number {i}." for i in range(70)]


def direct(texts, batch_size=32):
    return embeddings.minilm_model().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False)


# -- the vectors -----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["minilm", "chat"])
def test_vectors_are_normalised_float32_and_identical_texts_score_one(engine, model):
    vectors = engine.embed([CAT, CAT, CAT_PARAPHRASE, UNRELATED], model=model)
    dim = 384 if model == "minilm" else engine.loaded.model.config.hidden_size
    assert vectors.shape == (4, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = vectors @ vectors.T
    assert cos[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert cos[0, 2] > cos[0, 3] and cos[2, 0] > cos[2, 3]  # paraphrase closer than unrelated


def test_minilm_paraphrases_beat_unrelated_pairs_by_a_margin():
    pairs = [("How do I reset my password?", "What are the steps to change my password?", "The volcano erupted."),
             ("The train arrived two hours late.", "The train was delayed by two hours.", "I like green tea."),
             (CAT, CAT_PARAPHRASE, UNRELATED)]
    for a, para, other in pairs:
        va, vp, vo = api.embed([a, para, other])
        assert va @ vp > 0.6 and va @ vo < 0.3, (a, float(va @ vp), float(va @ vo))


def test_minilm_is_the_model_itself_in_the_callers_order():
    shuffled = VARIED[::-1]  # > 64 texts: the progress-bar path; many batches of different widths
    ours = embed(shuffled)
    assert np.abs(ours - direct(shuffled)).max() < 1e-5  # same model; only batch padding may differ, in the last bits
    for i in (0, 17, 69):  # row i is text i, whatever batch it was sorted into
        assert np.abs(ours[i] - direct([shuffled[i]])[0]).max() < 1e-5


def test_a_string_is_one_text_and_batch_size_does_not_change_the_vectors():
    single = embed(CAT)
    assert single.shape == (1, 384)
    assert np.allclose(embed([UNRELATED, CAT])[1], single[0], atol=1e-5)
    assert np.allclose(embed(VARIED[:20], batch_size=1), embed(VARIED[:20], batch_size=7), atol=1e-5)


def test_chat_vectors_do_not_depend_on_padding(engine):
    alone = engine.embed([CAT], model="chat")[0]
    padded = engine.embed([CAT, VARIED[64]], model="chat", batch_size=2)[0]  # CAT is padded to the long text
    assert np.abs(alone - padded).max() < 1e-4
    assert alone @ engine.embed([UNRELATED], model="chat")[0] < 0.99


def test_chat_needs_an_engine_and_unknown_models_are_named():
    with pytest.raises(ValueError, match="model='chat' needs the chat model"):
        embed([CAT], model="chat")
    with pytest.raises(ValueError, match="model='bert' is not allowed; choose one of minilm, chat"):
        embed([CAT], model="bert")
    with pytest.raises(ValueError, match="batch_size=0"):
        embed([CAT], batch_size=0)


# -- input rules -----------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    ([], r"texts=\[\] is not allowed"),
    (["ok", "   "], r"texts\[1\]='   ' is not allowed; texts must not be empty or whitespace-only"),
    (["ok", "\n\t"], r"texts\[1\]="),
    ("", r"texts\[0\]='' is not allowed"),
    (["ok", None], r"texts\[1\]=None is not allowed; every text must be a string"),
])
def test_empty_whitespace_and_non_strings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        embed(bad)


def test_very_long_input_is_truncated_to_256_word_pieces_not_refused():
    long_text = CAT + " " + " ".join(["filler"] * 4000)  # 28,000 characters: inside GPT_DEMO_MAX_INPUT_CHARS
    vector = embed(long_text)[0]
    assert np.isfinite(vector).all() and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    # Only the first 256 word pieces count: whatever follows them changes nothing...
    assert np.allclose(vector, embed(long_text + " " + UNRELATED)[0], atol=1e-5)
    # ...while a change inside them does.
    assert not np.allclose(vector, embed(UNRELATED + " " + long_text)[0], atol=1e-3)
    assert embeddings.EMBEDDERS["minilm"].max_tokens == embeddings.minilm_model().max_seq_length == 256


def test_chat_truncates_long_input_too(engine):
    long_text = CAT + " " + " ".join(["filler"] * 1000)  # > 512 tokens
    a, b = engine.embed([long_text, long_text + " " + UNRELATED], model="chat")
    assert np.abs(a - b).max() < 1e-4


def test_a_progress_bar_only_for_long_lists(capsys):
    embed(VARIED[:64])
    assert "embedding" not in capsys.readouterr().err
    embed(VARIED[:65])
    assert "embedding" in capsys.readouterr().err
    embed(VARIED[:3], progress=True)
    assert "embedding" in capsys.readouterr().err


# -- search ----------------------------------------------------------------------------
def test_search_returns_ranked_plain_records():
    corpus = [UNRELATED, CAT_PARAPHRASE, "Dogs bark at the mailman.", "Interest rates went up."]
    hits = search("a feline resting on furniture", corpus, top_k=3)
    assert hits[0] == embeddings.SearchHit(1, CAT_PARAPHRASE, hits[0].score) and len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].score == pytest.approx(float(embed(["a feline resting on furniture"])[0] @ embed(CAT_PARAPHRASE)[0]),
                                          abs=1e-5)
    money = search("monetary policy", corpus, top_k=2)
    assert {h.index for h in money} == {0, 3}
    assert len(search("x", corpus, top_k=10)) == 4  # never more than the corpus


@pytest.mark.parametrize("query, corpus, top_k, message", [
    ("x", ["a"], 0, "top_k=0"),
    ("  ", ["a"], 1, "query='  ' is not allowed"),
    ("x", [], 1, r"corpus=\[\] is not allowed"),
    ("x", ["a", " "], 1, r"corpus\[1\]=' ' is not allowed"),
])
def test_bad_search_arguments_are_named(query, corpus, top_k, message):
    with pytest.raises(ValueError, match=message):
        search(query, corpus, top_k=top_k)


def test_chat_search_through_the_engine(engine):
    hits = engine.search("kitten on a couch", [UNRELATED, CAT, "Stocks fell sharply today."], top_k=1, model="chat")
    assert hits[0].index == 1


# -- projection ------------------------------------------------------------------------
TOPICS = [CAT, CAT_PARAPHRASE, "A cat sits on a chair.", UNRELATED, "Inflation rose last quarter.", "Stocks fell."]


@pytest.mark.parametrize("dims", [2, 3])
def test_pca_projection_shapes_and_structure(dims):
    coords = project(TOPICS, dims=dims)
    assert coords.shape == (6, dims) and coords.dtype == np.float32
    cats, money = coords[:3].mean(0), coords[3:].mean(0)
    spread = max(np.linalg.norm(coords[:3] - cats, axis=1).max(), np.linalg.norm(coords[3:] - money, axis=1).max())
    assert np.linalg.norm(cats - money) > spread  # the two topics form two clusters
    assert np.array_equal(coords, project(TOPICS, dims=dims))  # deterministic, signs included


def test_pca_is_the_principal_axes():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 5)) * np.array([10.0, 3.0, 1.0, 0.1, 0.1])  # variance mostly on axes 0, 1
    coords = project(points, dims=2)
    assert np.abs(coords[:, 0]).std() > np.abs(coords[:, 1]).std()
    assert abs(np.corrcoef(coords[:, 0], points[:, 0])[0, 1]) > 0.99
    assert abs(np.corrcoef(coords[:, 1], points[:, 1])[0, 1]) > 0.99


def test_projection_of_vectors_lists_and_tiny_inputs():
    assert project(embed([CAT]), dims=2).shape == (1, 2)
    assert project([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dims=3).shape == (2, 3)  # fewer points than dims


@pytest.mark.parametrize("kwargs, message", [
    ({"dims": 4}, "dims=4 is not allowed; choose 2 or 3"),
    ({"method": "tsne"}, "method='tsne' is not allowed; choose one of pca, umap"),
    ({"method": "umap"}, "method='umap' needs at least 4 points, got 2"),
])
def test_bad_projection_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        project(np.eye(2, 8, dtype=np.float32), **kwargs)


def test_bad_vectors_are_refused():
    with pytest.raises(ValueError, match=r"vectors of shape \(3,\)"):
        project(np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        project(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_umap_without_umap_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    with pytest.raises(RuntimeError, match="pip install umap-learn"):
        project(np.eye(5, 8, dtype=np.float32), method="umap")


@pytest.mark.slow
@pytest.mark.parametrize("dims", [2, 3])
def test_umap_projection(dims):
    pytest.importorskip("umap", reason="umap-learn is optional: pip install umap-learn")
    coords = project(TOPICS * 2, dims=dims, method="umap")
    assert coords.shape == (12, dims) and coords.dtype == np.float32 and np.isfinite(coords).all()
    assert np.array_equal(coords, project(TOPICS * 2, dims=dims, method="umap"))  # seeded


# -- analogies -------------------------------------------------------------------------
def test_king_minus_man_plus_woman_is_queen():
    hits = analogy("man", "king", "woman")
    assert hits[0].text == "queen" and len(hits) == 5
    assert {"man", "king", "woman"}.isdisjoint(h.text for h in hits)
    assert analogy("france", "paris", "germany")[0].text == "berlin"
    assert analogy("japan", "tokyo", "italy")[0].text == "rome"
    assert analogy("big", "bigger", "small")[0].text == "smaller"
    assert analogy("man", "actor", "woman")[0].text == "actress"


def test_analogy_with_a_vocabulary_of_your_own():
    hits = analogy("Man", "King", "Woman", vocabulary=["king", "queen", "banana", "car", "woman"], top_k=3)
    assert [h.text for h in hits][0] == "queen" and "king" not in [h.text for h in hits]  # inputs out, any case
    assert len(hits) == 3
    with pytest.raises(ValueError, match="no words besides the three inputs"):
        analogy("man", "king", "woman", vocabulary=["King", "man"])
    with pytest.raises(ValueError, match=r"words\[1\]=' '"):
        analogy("man", " ", "woman")


def test_default_vocabulary_is_offline_and_large():
    words = embeddings.DEFAULT_VOCABULARY
    assert len(words) == len(set(words)) >= 300 and {"queen", "berlin", "paris", "princess", "tokyo"} <= set(words)


# -- façade, layering and CLI ----------------------------------------------------------
def test_api_functions_need_no_chat_model():
    assert api.embed([CAT]).shape == (1, 384)
    assert api.search("kitten", [UNRELATED, CAT_PARAPHRASE], top_k=1)[0].index == 1
    assert api.project(TOPICS, dims=3).shape == (6, 3)
    assert api.analogy("man", "king", "woman", top_k=1)[0].text == "queen"


def test_engine_project_and_analogy_with_the_chat_model(engine):
    assert engine.project(TOPICS, dims=2, model="chat").shape == (6, 2)
    assert len(engine.analogy("man", "king", "woman", top_k=3, model="chat")) == 3


def test_importing_embeddings_loads_no_model_library():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, gpt_demo.embeddings, gpt_demo.api\n"
         "print('HEAVY', [m for m in ('torch', 'sentence_transformers', 'transformers', 'umap') if m in sys.modules])"],
        capture_output=True, text=True, timeout=120,
    )
    assert "HEAVY []" in proc.stdout, proc.stderr


def test_cli_embed_project_json(capsys):
    assert main(["embed", CAT, CAT_PARAPHRASE, UNRELATED, "--project", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [len(r["coords"]) for r in rows] == [2, 2, 2] and rows[0]["text"] == CAT


def test_cli_embed_reads_stdin_skips_blank_lines_and_searches(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{UNRELATED}\n\n   \n{CAT_PARAPHRASE}\n"))
    assert main(["embed", "--search", "kitten", "--top-k", "1", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits == [{"index": 1, "text": CAT_PARAPHRASE, "score": pytest.approx(hits[0]["score"])}]


def test_cli_embed_vectors_and_errors(capsys):
    assert main(["embed", CAT, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert len(row["embedding"]) == 384 and np.linalg.norm(row["embedding"]) == pytest.approx(1.0, abs=1e-4)
    assert main(["embed", CAT, "  "]) == 2
    assert "texts[1]='  ' is not allowed" in capsys.readouterr().err


# -- thread safety ---------------------------------------------------------------------
# Texts of different lengths (1 to ~30 words), so a batch that lost its padding cannot
# become a tensor; short enough that 240 calls stay cheap.
RACE_TEXTS = [f"text {i}: " + " ".join(["tokens", "of", "varying", "length"] * (i * 5 % 8)) for i in range(12)]
RACE_TEXTS += ["short", "I want to kill him"]


def _race_call(thread: int, j: int):
    """The j-th call of a thread: an embed or a moderate of 2-4 texts of mixed lengths."""
    from gpt_demo.moderation import moderate

    picks = [RACE_TEXTS[(thread * 7 + j * 3 + k * 5) % len(RACE_TEXTS)] for k in range(2 + (thread + j) % 3)]
    if (thread + j) % 2:
        return "embed", embed(picks, progress=False)
    return "moderate", np.array([[r.category_scores[c] for c in sorted(r.category_scores)] for r in moderate(picks)])


def test_concurrent_embed_and_moderate_calls_agree_with_sequential_ones():
    """12 threads x 20 mixed calls on the shared MiniLM: no error, the same numbers as one after another.

    Before the fix each call switched the shared tokenizer's padding off and on, and about one
    call in sixty failed with "Unable to create tensor, you should probably activate truncation
    and/or padding" (or the Rust tokenizer's "Already borrowed"): 240 calls catch that 98 times in 100.
    """
    import threading

    threads, calls = 12, 20
    expected = {(t, j): _race_call(t, j) for t in range(threads) for j in range(calls)}
    got, errors = {}, []
    barrier = threading.Barrier(threads)
    # Switch threads every 10 us instead of 5 ms, so Python-level steps interleave often.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)

    def worker(t):
        barrier.wait()  # all start together, so the tokenizer calls really overlap
        for j in range(calls):
            try:
                got[(t, j)] = _race_call(t, j)
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                errors.append(f"call {t}/{j}: {type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    try:
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    finally:
        sys.setswitchinterval(previous)
    assert errors == []
    for key, (kind, want) in expected.items():
        assert got[key][0] == kind
        assert np.allclose(got[key][1], want, rtol=0, atol=1e-5), (key, kind)


def test_loading_minilm_keeps_the_libraries_import_time_log_lines_out_of_the_output():
    """sentence-transformers imports peft, and peft bitsandbytes, which on CPUs with AVX512-BF16 asks kernels for a
    kernel and logs "Failed to load CPU gemm_4bit_forward" (kernels itself logs "Skipping publisher trust check" when
    the hub is offline); a notebook cell showed them as stderr. Here the same log lines are raised on every host, at
    bitsandbytes' import, and must not reach stderr; the model still loads and encodes."""
    script = """
import builtins, logging, sys
real_import = builtins.__import__
def noisy_import(name, *args, **kwargs):
    first = name == "bitsandbytes" and "bitsandbytes" not in sys.modules
    module = real_import(name, *args, **kwargs)
    if first:
        logging.getLogger("kernels._internals.hf_hub").warning("Skipping publisher trust check (simulated)")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward (simulated)")
    return module
builtins.__import__ = noisy_import
from gpt_demo import embeddings
vectors = embeddings.embed(["hello there"], progress=False)
assert vectors.shape == (1, 384), vectors.shape
assert "bitsandbytes" in sys.modules  # the import chain ran, so the line was logged
assert logging.getLogger("bitsandbytes").level == logging.getLogger("kernels").level == logging.NOTSET  # the scope ended
logging.getLogger("bitsandbytes.x").warning("after the load: shown")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gemm_4bit_forward" not in proc.stderr and "publisher trust" not in proc.stderr, proc.stderr[-2000:]
    assert "after the load: shown" in proc.stderr  # logging itself still works afterwards
