"""The arena leaderboard: cross-model votes in the store, Elo, Bradley-Terry, bootstrap, FastChat's format, the CLI.

    .venv/bin/python -m pytest tests/test_leaderboard.py -q

No model is loaded: the votes are written directly or sampled from known Bradley-Terry strengths.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time

import numpy as np
import pytest

from gpt_demo.feedback import AlreadyStored, Battle, FeedbackStore, default_path
from gpt_demo.feedback.leaderboard import (bootstrap_bt, bradley_terry, export_battles, games_per_model, leaderboard,
                                           online_elo, plot_win_rates, to_fastchat, win_rates)
from gpt_demo.feedback.migrations import MIGRATIONS

TRUE = {"strong": 1150.0, "good": 1050.0, "fair": 950.0, "weak": 850.0}  # mean 1000: the leaderboard's anchoring


def p_win(ra: float, rb: float) -> float:
    return 1.0 / (1.0 + 10 ** ((rb - ra) / 400))


def sampled_battles(n: int = 3000, seed: int = 7) -> list[dict]:
    """FastChat-style battles between random pairs, each won with its Bradley-Terry probability."""
    rng = np.random.default_rng(seed)
    names = list(TRUE)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), size=2, replace=False)
        a, b = names[i], names[j]
        out.append({"model_a": a, "model_b": b, "winner": "model_a" if rng.random() < p_win(TRUE[a], TRUE[b]) else "model_b"})
    return out


@pytest.fixture
def store(gpt_demo_home):
    return FeedbackStore.open()


# -- Bradley-Terry ------------------------------------------------------------------------------
def test_bradley_terry_recovers_known_strengths_and_its_intervals_contain_them():
    battles = sampled_battles()
    bt = bradley_terry(battles)
    assert sorted(bt, key=bt.get, reverse=True) == list(TRUE)  # the order
    assert abs(sum(bt.values()) / 4 - 1000) < 1e-6  # anchored: mean 1000, as the true ones
    assert all(abs(bt[m] - TRUE[m]) < 30 for m in TRUE), bt
    # Seeded: four 95 % intervals all cover their true value in roughly three draws out of four.
    board = leaderboard(battles, bootstrap=200, seed=1)
    assert board.models == list(TRUE) and board.battles == 3000 and board.bootstrap == 200
    for row in board.rows:
        assert row.bt_low < row.bt < row.bt_high and row.bt_high - row.bt_low < 120
        assert row.bt_low <= TRUE[row.model] <= row.bt_high, (row, TRUE[row.model])
    assert [row.rank for row in board.rows] == [1, 2, 3, 4]  # 100 points apart: the intervals do not overlap
    assert sum(row.games for row in board.rows) == 2 * 3000


def test_bradley_terry_matches_fastchats_own_fit():
    """FastChat's ``fit_bt`` (scipy L-BFGS on the same loss, no penalty) gives the same ratings."""
    optimize = pytest.importorskip("scipy.optimize")
    battles = sampled_battles(600, seed=3) + [{"model_a": "good", "model_b": "fair", "winner": "tie"}] * 40
    models = list(dict.fromkeys(m for b in battles for m in (b["model_a"], b["model_b"])))
    a = np.array([models.index(b["model_a"]) for b in battles])
    b_ = np.array([models.index(b["model_b"]) for b in battles])
    y = np.array([{"model_a": 1.0, "model_b": 0.0, "tie": 0.5}[b["winner"]] for b in battles])
    alpha = math.log(10)

    def loss_and_grad(r):  # elo_analysis.bt_loss_and_grad, weights 1
        p = 1 / (1 + np.exp(-alpha * (r[a] - r[b_])))
        loss = -(np.log(p) * y + np.log(1 - p) * (1 - y)).sum()
        g = -alpha * (y - p)
        return loss, np.bincount(a, g, len(models)) - np.bincount(b_, g, len(models))

    r = optimize.minimize(loss_and_grad, np.zeros(len(models)), jac=True, method="L-BFGS-B",
                          options={"maxiter": 1000, "gtol": 1e-9}).x
    theirs = dict(zip(models, 400 * (r - r.mean()) + 1000))
    ours = bradley_terry(battles, l2=1e-9)
    assert all(abs(ours[m] - theirs[m]) < 0.5 for m in models), (ours, theirs)
    assert all(abs(bradley_terry(battles)[m] - theirs[m]) < 2 for m in models)  # the default penalty barely moves them


def test_anchoring_and_the_bootstrap_are_reproducible():
    battles = sampled_battles(400, seed=5)
    anchored = bradley_terry(battles, anchor="weak", anchor_rating=800)
    plain = bradley_terry(battles)
    assert anchored["weak"] == pytest.approx(800)
    assert anchored["strong"] - anchored["weak"] == pytest.approx(plain["strong"] - plain["weak"])
    models, first = bootstrap_bt(battles, rounds=30, seed=11)
    _, again = bootstrap_bt(battles, rounds=30, seed=11)
    _, other = bootstrap_bt(battles, rounds=30, seed=12)
    assert first.shape == (30, 4) and np.array_equal(first, again) and not np.array_equal(first, other)
    assert models == list(dict.fromkeys(m for b in battles for m in (b["model_a"], b["model_b"])))


def test_a_model_that_never_lost_still_gets_a_finite_rating():
    battles = [{"model_a": "best", "model_b": "rest", "winner": "model_a"}] * 5
    board = leaderboard(battles, bootstrap=10, seed=0)
    assert all(math.isfinite(x) for row in board.rows for x in (row.bt, row.bt_low, row.bt_high))
    assert board.rows[0].model == "best" and board.rows[0].win_rate == 1.0


# -- online Elo ---------------------------------------------------------------------------------
def test_online_elo_by_hand_on_three_battles():
    battles = [
        {"model_a": "x", "model_b": "y", "winner": "model_a"},
        {"model_a": "y", "model_b": "z", "winner": "tie"},
        {"model_a": "x", "model_b": "z", "winner": "model_b"},
    ]
    # 1. x 1000 vs y 1000: E_x = 1 / (1 + 10^0) = 0.5; x wins: x = 1000 + 4 (1 - 0.5) = 1002, y = 1000 + 4 (0 - 0.5) = 998.
    # 2. y 998 vs z 1000, tie: E_y = 1 / (1 + 10^(2/400)) = 0.4971218; y = 998 + 4 (0.5 - 0.4971218) = 998.0115128,
    #    z = 1000 + 4 (0.5 - 0.5028782) = 999.9884872.
    # 3. x 1002 vs z 999.9884872, z wins: E_x = 1 / (1 + 10^((999.9884872 - 1002) / 400)) = 0.5028948;
    #    x = 1002 + 4 (0 - 0.5028948) = 999.9884209, z = 999.9884872 + 4 (1 - 0.4971052) = 1002.0000663.
    elo = online_elo(battles)
    assert elo == pytest.approx({"x": 999.9884209, "y": 998.0115128, "z": 1002.0000663}, abs=1e-6)
    both_bad = [dict(b, winner="tie (bothbad)") if b["winner"] == "tie" else b for b in battles]
    assert online_elo(both_bad) == pytest.approx(elo)  # both bad counts as a tie, as in FastChat
    assert online_elo(battles[::-1]) != pytest.approx(elo)  # online: the order matters
    assert online_elo(battles[:1], k=32) == {"x": 1016.0, "y": 984.0}  # K scales each update


def test_games_and_the_win_rate_matrix():
    battles = [
        {"model_a": "p", "model_b": "q", "winner": "model_a"},
        {"model_a": "q", "model_b": "p", "winner": "model_a"},
        {"model_a": "q", "model_b": "p", "winner": "tie"},
        {"model_a": "p", "model_b": "r", "winner": "model_a"},
        {"model_a": "r", "model_b": "r", "winner": "model_a"},  # one model against itself: says nothing, skipped
    ]
    assert games_per_model(battles) == {"p": 4, "q": 3, "r": 1}
    models, w = win_rates(battles)
    assert models == ["p", "q", "r"]
    # p beat q once, lost once, tied once: 1.5 / 3; p beat r once; q and r never met.
    expected = np.array([[np.nan, 0.5, 1.0], [0.5, np.nan, np.nan], [0.0, np.nan, np.nan]])
    np.testing.assert_allclose(w, expected)
    board = leaderboard(battles, bootstrap=0)
    assert {r.model: r.win_rate for r in board.rows} == {"p": 2.5 / 4, "q": 1.5 / 3, "r": 0.0}
    assert board.bootstrap == 0 and all(r.bt_low is None and r.bt_high is None for r in board.rows)


def test_the_result_as_markdown_dict_and_figure():
    board = leaderboard(sampled_battles(300, seed=2), bootstrap=20, seed=0)
    md = board.to_markdown()
    assert md.splitlines()[0].startswith("| Rank | Model | Rating (BT) | 95% CI | Elo (online) | Games | Win rate |")
    assert md.index("| strong |") < md.index("| weak |") and "300 battles, 20 bootstrap rounds (seed 0)." in md
    data = json.loads(json.dumps(board.to_dict()))
    assert data["models"] == board.models and len(data["win_rates"]) == 4 and data["win_rates"][0][0] is None
    assert set(data["rows"][0]) == {"model", "elo", "bt", "bt_low", "bt_high", "games", "win_rate", "rank"}
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = plot_win_rates(board)
    assert isinstance(fig, Figure)
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (4, 4) and image.mask[0, 0] and not image.mask[0, 1]


# -- the store: cross-model votes and the migration -------------------------------------------
def test_a_cross_model_battle_round_trips(store):
    rid = store.add_battle("Capital of France?", "Paris.", "London.", "a", model_a="smollm2-360m-instruct",
                           model_b="smollm2-135m-instruct", anonymous=True, session_id="s1",
                           params={"temperature": 0.7})
    store.add_battle("Capital of France?", "Paris.", "London.", "b", model_a="big", model_b="small", anonymous=False)
    store.add_comparison("Q", "one", "two", "tie", model="smollm2-135m-instruct")  # the single-model arena
    (first, second) = store.battles()
    assert first == Battle(rid, first.created_at, "Capital of France?", "Paris.", "London.", "smollm2-360m-instruct",
                           "smollm2-135m-instruct", "a", True, "s1", "arena")
    assert (second.model_a, second.model_b, second.verdict, second.anonymous) == ("big", "small", "b", False)
    assert [b.id for b in store.battles(anonymous_only=True)] == [rid]
    single = store.battles(cross_model=False)[-1]
    assert (single.model_a, single.model_b, single.anonymous, single.cross_model) == (
        "smollm2-135m-instruct", "smollm2-135m-instruct", None, False)
    # A battle is also a preference pair, and stored once.
    assert {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "London."} in store.pairs()
    with pytest.raises(AlreadyStored, match=f"already stored as #{rid}"):
        store.add_battle("Capital of France?", "Paris.", "London.", "a", model_a="smollm2-360m-instruct",
                         model_b="smollm2-135m-instruct")
    assert store.counts()["rankings"] == 3


def test_a_store_at_the_previous_schema_migrates_and_its_rows_still_read(gpt_demo_home):
    path = default_path(gpt_demo_home)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    old = [m for m in MIGRATIONS if m[0] < "004"]
    assert [name for name, _ in old] == ["001_rankings", "002_arena_verdict", "003_content_hash"]
    for name, sql in old:  # the file as the previous release wrote it
        db.executescript(sql)
        db.execute("INSERT INTO _migrations VALUES (?, 'then')", (name,))
    db.execute("INSERT INTO rankings(created_at, session_id, prompt, model, source) "
               "VALUES ('2024-05-01T10:00:00+00:00', 's', 'old ranking', 'm', 'rank')")
    db.executemany("INSERT INTO candidates VALUES (1, ?, ?, ?)", [(0, "x", 2), (1, "y", 1)])
    db.execute("INSERT INTO rankings(created_at, session_id, prompt, model, source, verdict) "
               "VALUES ('2024-05-01T10:01:00+00:00', 's', 'old vote', 'm', 'arena', 'b')")
    db.executemany("INSERT INTO candidates VALUES (2, ?, ?, ?)", [(0, "A text", 2), (1, "B text", 1)])
    db.close()

    store = FeedbackStore(path)
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")] == [n for n, _ in MIGRATIONS]
        columns = {r[1] for r in conn.execute("PRAGMA table_info(rankings)")}
    assert {"model_a", "model_b", "anonymous"} <= columns
    assert [r.prompt for r in store.rankings()] == ["old ranking", "old vote"]
    assert store.pairs() == [{"prompt": "old ranking", "chosen": "y", "rejected": "x"},
                             {"prompt": "old vote", "chosen": "B text", "rejected": "A text"}]
    assert store.battles() == []  # the old vote was one model against itself
    (old_vote,) = store.battles(cross_model=False)
    assert (old_vote.model_a, old_vote.model_b, old_vote.verdict, old_vote.anonymous) == ("m", "m", "b", None)
    assert (old_vote.answer_a, old_vote.answer_b, old_vote.created_at) == ("A text", "B text", "2024-05-01T10:01:00+00:00")
    with pytest.raises(AlreadyStored, match="#2"):  # old rows keep their content hash
        store.add_comparison("old vote", "A text", "B text", "b", model="m")
    rid = store.add_battle("new vote", "A", "B", "both_bad", model_a="m", model_b="n")
    assert [(b.id, b.model_a, b.model_b, b.verdict, b.anonymous) for b in store.battles()] == [(rid, "m", "n", "both_bad", True)]
    store.close()
    assert len(FeedbackStore(path).battles(cross_model=False)) == 2  # reopening migrates nothing twice


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(verdict="maybe"), "verdict='maybe' is not allowed; choose one of a, b, tie, both_bad"),
        (dict(model_a=""), "model_a='' is not allowed; give the model's id (1 to 256 characters"),
        (dict(model_b=None), "model_b=None is not allowed"),
        (dict(model_b="x" * 300), "model_b='xxxxxxxx"),
        (dict(model_a="gpt2 "), "model_a='gpt2 ' is not allowed; give the model's id"),
        (dict(model_a="gpt\n2"), "model_a='gpt\\n2' is not allowed"),
        (dict(model_a="same", model_b="same"), "model_a=model_b='same' is not allowed; a battle is between two different"),
        (dict(anonymous="yes"), "anonymous='yes' is not allowed; give True"),
        (dict(a="  "), "candidates[0]='  ' is not allowed"),
        (dict(prompt=""), "prompt='' is not allowed"),
    ],
)
def test_bad_battles_are_refused_by_name_and_store_nothing(store, kwargs, message):
    args = dict(prompt="Q", a="one", b="two", verdict="a", model_a="big", model_b="small", anonymous=True) | kwargs
    with pytest.raises(ValueError) as err:
        store.add_battle(args.pop("prompt"), args.pop("a"), args.pop("b"), args.pop("verdict"), **args)
    assert message in str(err.value)
    if "x" * 300 in str(kwargs):
        assert "(300 characters)" in str(err.value)
    assert store.counts()["rankings"] == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: online_elo([{"model_a": "a", "model_b": "b", "winner": "left"}]),
         "battles[0].winner='left' is not allowed; choose one of model_a, model_b, tie, tie (bothbad)"),
        (lambda: online_elo([{"model_a": "a", "winner": "tie"}]), "battles[0].model_b=None is not allowed"),
        (lambda: leaderboard([], bootstrap=-1), "bootstrap=-1 is not allowed"),
        (lambda: bootstrap_bt([], rounds=0), "rounds=0 is not allowed"),
        (lambda: bradley_terry(sampled_battles(10), anchor="nobody"), "anchor='nobody' is not allowed; choose a model"),
        (lambda: bradley_terry(sampled_battles(10), l2=0), "l2=0 is not allowed; give a small positive number"),
    ],
)
def test_bad_leaderboard_inputs_are_named(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


# -- FastChat's battle format -----------------------------------------------------------------
def test_the_fastchat_export_round_trips_and_has_their_keys(store, tmp_path):
    before = time.time()
    for verdict in ("a", "b", "tie", "both_bad"):
        store.add_battle("Say hi", f"hi ({verdict})", "hello", verdict, model_a="big", model_b="small",
                         anonymous=verdict != "b", session_id="sess")
    battles = store.battles()
    out = tmp_path / "clean_battle.json"
    assert export_battles(battles, out) == 4
    records = json.loads(out.read_text())
    assert records == to_fastchat(battles) and json.loads(json.dumps(records)) == records
    assert [r["winner"] for r in records] == ["model_a", "model_b", "tie", "tie (bothbad)"]
    assert [r["anony"] for r in records] == [True, False, True, True]
    first = records[0]
    assert {"question_id", "model_a", "model_b", "winner", "judge", "conversation_a", "conversation_b", "turn", "anony",
            "tstamp"} <= set(first)
    assert (first["model_a"], first["model_b"], first["turn"], first["judge"]) == ("big", "small", 1, "arena_user_sess")
    assert first["conversation_a"] == [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi (a)"}]
    assert first["conversation_b"][1] == {"role": "assistant", "content": "hello"}
    assert isinstance(first["tstamp"], float) and before - 5 <= first["tstamp"] <= time.time() + 5
    assert len({r["question_id"] for r in records}) == 1 and len(first["question_id"]) == 32  # one question
    # FastChat's records rate the same as the store's battles.
    assert leaderboard(records, bootstrap=10, seed=3) == leaderboard(battles, bootstrap=10, seed=3)


# -- the command line -------------------------------------------------------------------------
def test_cli_prints_the_table_and_writes_the_export_and_plot(store, tmp_path, capsys):
    from gpt_demo.cli import main

    assert main(["feedback", "leaderboard", "--bootstrap", "5"]) == 0
    assert "No cross-model arena votes" in capsys.readouterr().out
    for i, b in enumerate(sampled_battles(60, seed=4)):
        verdict = "a" if b["winner"] == "model_a" else "b"
        store.add_battle(f"Q{i}", "one", "two", verdict, model_a=b["model_a"], model_b=b["model_b"], anonymous=i % 2 == 0)
    store.add_comparison("same model", "one", "two", "a", model="strong")  # not a battle between models
    export, plot = tmp_path / "out" / "battles.json", tmp_path / "wins.png"
    argv = ["feedback", "leaderboard", "--bootstrap", "20", "--seed", "1", "--export-battles", str(export)]
    has_mpl = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        has_mpl = False
    assert main(argv + (["--plot", str(plot)] if has_mpl else [])) == 0
    captured = capsys.readouterr()
    assert "| Rank | Model | Rating (BT) |" in captured.out and "60 battles, 20 bootstrap rounds (seed 1)." in captured.out
    assert all(f"| {m} |" in captured.out for m in TRUE)
    assert "Wrote 60 battles in FastChat's format" in captured.err
    assert len(json.loads(export.read_text())) == 60
    if has_mpl:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "Wrote the win-rate matrix" in captured.err

    assert main(["feedback", "leaderboard", "--bootstrap", "0", "--json", "--anonymous-only"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["battles"] == 30 and data["bootstrap"] == 0 and data["path"] == store.path
    assert sorted(data["models"]) == sorted(TRUE)

    assert main(["feedback", "leaderboard", "--bootstrap", "-1"]) == 2
    assert "--bootstrap=-1 is not allowed" in capsys.readouterr().err
