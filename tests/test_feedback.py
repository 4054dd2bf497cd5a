"""The rankings store: a real SQLite file, migrations, validation, pair expansion, export.

    .venv/bin/python -m pytest tests/test_feedback.py -q
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading

import pytest

from gpt_demo.feedback import FeedbackStore, check_ranks, default_path, expand_ranking
from gpt_demo.feedback.migrations import MIGRATIONS, migrate

ANSWERS = ["Paris.", "It is Paris, the capital.", "London.", "I don't know."]


@pytest.fixture
def store(gpt_demo_home):
    return FeedbackStore.open()


def rows(path, table):
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_the_store_is_a_wal_sqlite_file_under_the_data_directory(store, gpt_demo_home):
    assert store.path == str(default_path(gpt_demo_home)) == str(gpt_demo_home / "feedback.sqlite")
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        applied = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
    assert applied == [name for name, _ in MIGRATIONS]


def test_a_ranking_is_stored_with_everything_it_needs(store):
    rid = store.add_ranking("Capital of France?", ANSWERS[:3], [2, 1, 3], model="smollm2-135m-instruct",
                            adapter="sft-demo", params={"temperature": 0.9}, session_id="abc")
    (r,) = list(store.rankings())
    assert r.id == rid and r.prompt == "Capital of France?" and r.candidates == ANSWERS[:3]
    assert r.ranks == [2, 1, 3] and r.model == "smollm2-135m-instruct" and r.adapter == "sft-demo"
    assert r.params == {"temperature": 0.9} and r.session_id == "abc" and r.created_at.endswith("+00:00")
    assert store.counts() == {"rankings": 1, "pairs": 3}
    assert rows(store.path, "candidates") == 3


@pytest.mark.parametrize(
    "ranks, message",
    [
        ([1, 1, 2], "rank 3 is missing, rank 1 is used twice"),
        ([1, 2], "got 2 ranks"),
        ([1, 2, 4], "rank 3 is missing, rank 4 is out of range"),
        ([0, 1, 2], "rank 3 is missing, rank 0 is out of range"),
        ([1, 2, None], "ranks=[1, 2, None] is not allowed"),
        ([1, 2, "x"], "ranks=[1, 2, 'x'] is not allowed"),
        ([1, 2, 2.5], "is not allowed"),
    ],
)
def test_a_ranking_that_is_not_a_permutation_is_refused_and_stores_nothing(store, ranks, message):
    with pytest.raises(ValueError) as err:
        store.add_ranking("Q?", ANSWERS[:3], ranks, model="m")
    assert message in str(err.value) and "from 1 to 3" in str(err.value)
    assert rows(store.path, "rankings") == 0 and rows(store.path, "candidates") == 0


@pytest.mark.parametrize(
    "prompt, answers, field",
    [("", ANSWERS[:2], "prompt=''"), ("Q", ANSWERS[:1], "candidates=1"), ("Q", ANSWERS + ["a", "b", "c"], "candidates=7"),
     ("Q", ["fine", "  "], "candidates[1]='  '")],
)
def test_bad_prompts_and_answers_are_named(store, prompt, answers, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        store.add_ranking(prompt, answers, list(range(1, len(answers) + 1)), model="m")
    assert rows(store.path, "rankings") == 0


def test_a_failure_half_way_through_the_insert_leaves_nothing_behind(store, monkeypatch):
    # The candidates insert fails after the rankings row was written: the transaction must roll back.
    with sqlite3.connect(store.path) as db:
        db.execute("CREATE TRIGGER boom BEFORE INSERT ON candidates WHEN NEW.position = 2 "
                   "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        store.add_ranking("Q?", ANSWERS[:3], [1, 2, 3], model="m")
    assert rows(store.path, "rankings") == 0 and rows(store.path, "candidates") == 0


def test_expansion_gives_k_choose_2_pairs_best_first():
    pairs = expand_ranking("Q", ["a", "b", "c", "d"], [3, 1, 4, 2])
    assert len(pairs) == 6
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("b", "d"), ("b", "a"), ("b", "c"), ("d", "a"), ("d", "c"), ("a", "c")]
    assert all(set(p) == {"prompt", "chosen", "rejected"} and p["prompt"] == "Q" for p in pairs)


def test_arena_verdicts_and_ties(store):
    store.add_comparison("Q", "A-text", "B-text", "a", model="m")
    store.add_comparison("Q", "A-text", "B-text", "b", model="m")
    store.add_comparison("Q", "A-text", "B-text", "tie", model="m")
    store.add_comparison("Q", "A-text", "B-text", "both_bad", model="m")
    assert [r.verdict for r in store.rankings()] == ["a", "b", "tie", "both_bad"]
    assert store.pairs() == [{"prompt": "Q", "chosen": "A-text", "rejected": "B-text"},
                             {"prompt": "Q", "chosen": "B-text", "rejected": "A-text"}]  # ties give no pair
    assert store.counts() == {"rankings": 4, "pairs": 2}
    with pytest.raises(ValueError, match="verdict='maybe' is not allowed; choose one of a, b, tie, both_bad"):
        store.add_comparison("Q", "A", "B", "maybe", model="m")
    assert store.counts()["rankings"] == 4


def test_export_jsonl_in_trl_preference_format_and_parquet(store, tmp_path):
    store.add_ranking("Q1", ANSWERS[:3], [1, 2, 3], model="m")
    store.add_ranking("Q2", ANSWERS[:2], [2, 1], model="m")
    tmp_path = tmp_path / "exports"
    out = tmp_path / "pairs.jsonl"
    assert store.export(out) == 4
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"prompt": "Q1", "chosen": ANSWERS[0], "rejected": ANSWERS[1]}
    assert lines[-1] == {"prompt": "Q2", "chosen": ANSWERS[1], "rejected": ANSWERS[0]}
    pq = pytest.importorskip("pyarrow.parquet")
    assert store.export(tmp_path / "pairs.parquet") == 4
    table = pq.read_table(tmp_path / "pairs.parquet")
    assert table.column_names == ["prompt", "chosen", "rejected"] and table.num_rows == 4
    with pytest.raises(ValueError, match="format='csv' is not allowed; choose one of jsonl, parquet"):
        store.export(tmp_path / "pairs.csv")
    assert not (tmp_path / "pairs.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "pairs.parquet"]  # no temp files left


def test_an_old_file_is_upgraded_in_place_without_losing_rows(gpt_demo_home):
    path = default_path(gpt_demo_home)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    db.executescript(MIGRATIONS[0][1])  # a file written before the arena existed
    db.execute("INSERT INTO _migrations VALUES (?, 'then')", (MIGRATIONS[0][0],))
    db.execute("INSERT INTO rankings(created_at, session_id, prompt, model) VALUES ('t', 's', 'old prompt', 'm')")
    db.executemany("INSERT INTO candidates VALUES (1, ?, ?, ?)", [(0, "x", 2), (1, "y", 1)])
    db.close()
    store = FeedbackStore(path)
    assert store.pairs() == [{"prompt": "old prompt", "chosen": "y", "rejected": "x"}]
    store.add_comparison("new", "a", "b", "a", model="m")
    assert store.counts() == {"rankings": 2, "pairs": 2}
    assert migrate(sqlite3.connect(path, isolation_level=None)) == 0


def test_threads_writing_at_once_lose_nothing(store):
    def worker(w):
        for i in range(20):
            store.add_ranking(f"w{w} q{i}", ["a", "b", "c"], [1, 3, 2], model="m", session_id=f"s{w}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    rankings = list(store.rankings())
    assert len(rankings) == 120 and len({r.prompt for r in rankings}) == 120
    assert all(r.candidates == ["a", "b", "c"] and r.ranks == [1, 3, 2] for r in rankings)


def test_two_processes_share_one_store(store, gpt_demo_home):
    code = ("import sys\nfrom gpt_demo.feedback import FeedbackStore\n"
            "s = FeedbackStore.open()\n"
            "for i in range(30): s.add_ranking(f'{sys.argv[1]}{i}', ['a', 'b'], [2, 1], model='m')\n")
    # Different rankings per process (the same one would be stored once: see the tests below).
    procs = [subprocess.Popen([sys.executable, "-c", code, f"proc{n}-"]) for n in range(2)]
    for i in range(30):
        store.add_ranking(f"main{i}", ["a", "b"], [1, 2], model="m")
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert store.counts() == {"rankings": 90, "pairs": 90}


def test_cli_stats_and_export(store, tmp_path):
    store.add_ranking("Q", ["good", "bad", "worse"], [1, 2, 3], model="m")
    run = lambda *a: subprocess.run([sys.executable, "-m", "gpt_demo", "feedback", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    stats = run("stats", "--json")
    assert json.loads(stats.stdout)["pairs"] == 3
    out = tmp_path / "p.jsonl"
    proc = run("export", "--format", "jsonl", "--out", str(out))
    assert proc.returncode == 0 and "Wrote 3 preference pairs" in proc.stderr
    assert json.loads(out.read_text().splitlines()[0]) == {"prompt": "Q", "chosen": "good", "rejected": "bad"}
    bad = run("export", "--format", "xml")
    assert bad.returncode == 2 and "format='xml' is not allowed; choose one of jsonl, parquet" in bad.stderr


def test_check_ranks_accepts_strings_from_forms():
    assert check_ranks(["2", "1", "3"], 3) == [2, 1, 3]


def test_counts_agree_with_the_expanded_pairs(store):
    store.add_ranking("Q1", ["a", "b", "c", "d"], [4, 2, 1, 3], model="m")
    store.add_comparison("Q2", "x", "y", "tie", model="m")
    store.add_comparison("Q3", "x", "y", "b", model="m")
    store.add_ranking("Q4", ["a", "b"], [1, 2], model="m")
    assert store.counts() == {"rankings": 4, "pairs": len(store.pairs())} == {"rankings": 4, "pairs": 8}


# -- the same ranking is stored once -----------------------------------------------------
def test_the_same_ranking_again_is_already_stored_not_a_second_row(store):
    from gpt_demo.feedback import AlreadyStored

    first = store.add_ranking("Q?", ANSWERS[:3], [2, 1, 3], model="m", session_id="tab-1")
    with pytest.raises(AlreadyStored, match=rf"ranking already stored as #{first} \(same prompt, answers and ranks\)"):
        store.add_ranking("Q?", ANSWERS[:3], [2, 1, 3], model="m", session_id="tab-2")  # another browser session
    with pytest.raises(AlreadyStored) as shown:  # the same answers shown in another order
        store.add_ranking("Q?", [ANSWERS[2], ANSWERS[0], ANSWERS[1]], [3, 2, 1], model="other")
    assert shown.value.ranking_id == first and isinstance(shown.value, ValueError)
    assert store.counts() == {"rankings": 1, "pairs": 3} and rows(store.path, "candidates") == 3
    # Different ranks, a different prompt or another verdict is a new ranking.
    store.add_ranking("Q?", ANSWERS[:3], [1, 2, 3], model="m")
    store.add_ranking("Q!", ANSWERS[:3], [2, 1, 3], model="m")
    store.add_comparison("Q", "x", "y", "tie", model="m")
    store.add_comparison("Q", "x", "y", "both_bad", model="m")
    with pytest.raises(AlreadyStored):
        store.add_comparison("Q", "x", "y", "tie", model="m")
    assert store.counts()["rankings"] == 5


def test_one_ranking_from_many_threads_and_stores_at_once_is_stored_once(gpt_demo_home):
    from gpt_demo.feedback import AlreadyStored

    stores = [FeedbackStore.open() for _ in range(8)]  # separate connections, as separate sessions have
    barrier, results = threading.Barrier(len(stores)), []

    def submit(s):
        barrier.wait()
        try:
            results.append(("stored", s.add_ranking("Same?", ["a", "b"], [1, 2], model="m")))
        except AlreadyStored as exc:
            results.append(("already", exc.ranking_id))

    threads = [threading.Thread(target=submit, args=(s,)) for s in stores]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(kind for kind, _ in results) == ["already"] * 7 + ["stored"]
    assert len({rid for _, rid in results}) == 1
    assert stores[0].counts() == {"rankings": 1, "pairs": 1}


def test_another_process_finds_the_ranking_already_stored(store, gpt_demo_home):
    rid = store.add_ranking("Cross-process?", ["a", "b", "c"], [3, 1, 2], model="m")
    code = ("from gpt_demo.feedback import AlreadyStored, FeedbackStore\n"
            "try:\n"
            "    FeedbackStore.open().add_ranking('Cross-process?', ['b', 'c', 'a'], [1, 2, 3], model='m')\n"
            "except AlreadyStored as exc:\n"
            "    print('already', exc.ranking_id)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["already", str(rid)]
    assert store.counts()["rankings"] == 1


def test_an_old_file_gets_hashes_and_its_rankings_are_not_stored_twice(gpt_demo_home):
    from gpt_demo.feedback import AlreadyStored

    path = default_path(gpt_demo_home)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, sql in MIGRATIONS[:2]:  # a file from before the content hash
        db.executescript(sql)
        db.execute("INSERT INTO _migrations VALUES (?, 'then')", (name,))
    for rid in (1, 2):  # the old session check let the same ranking in twice
        db.execute("INSERT INTO rankings(created_at, session_id, prompt, model) VALUES ('t', ?, 'old', 'm')", (f"s{rid}",))
        db.executemany("INSERT INTO candidates VALUES (?, ?, ?, ?)", [(rid, 0, "x", 2), (rid, 1, "y", 1)])
    db.close()
    store = FeedbackStore(path)
    with sqlite3.connect(path) as conn:
        assert [r[0] is not None for r in conn.execute("SELECT content_hash FROM rankings ORDER BY id")] == [True, False]
    with pytest.raises(AlreadyStored, match="already stored as #1"):
        store.add_ranking("old", ["y", "x"], [1, 2], model="m")
    assert store.counts() == {"rankings": 2, "pairs": 2}  # old rows are kept as they were


def test_the_web_rank_tab_refuses_a_second_copy_from_another_session(store, engine):
    pytest.importorskip("gradio")
    from gpt_demo.web.rank import submit_ranking
    from gpt_demo.web.session import WebSession
    from gpt_demo.feedback import MAX_K

    answers = ["one", "two", "three"] + [""] * (MAX_K - 3)
    ranks = ["2", "1", "3"] + [None] * (MAX_K - 3)
    _, status, _ = submit_ranking(store, engine, WebSession(), "Typed?", 3, *answers, *ranks)
    assert status.startswith("Stored ranking #1")
    _, status, _ = submit_ranking(store, engine, WebSession(), "Typed?", 3, *answers, *ranks)  # a new browser tab
    assert "already stored as #1" in status
    assert store.counts()["rankings"] == 1


def test_the_k_range_is_one_constant_shared_by_store_magic_and_web():
    from gpt_demo.feedback import MAX_K, MIN_K
    from gpt_demo.feedback.pairs import check_candidates

    check_candidates("p", ["a"] * MAX_K)
    with pytest.raises(ValueError, match=f"give {MIN_K} to {MAX_K} answers"):
        check_candidates("p", ["a"] * (MAX_K + 1))
    pytest.importorskip("IPython")
    from gpt_demo.notebook.magics import rank_parser

    assert f"({MIN_K}-{MAX_K}, default 3)" in rank_parser().format_help()
