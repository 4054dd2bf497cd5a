"""GenerationParams: OpenAI's names and ranges, and errors that name field, value and range.

    .venv/bin/python -m pytest tests/test_params.py -q

Pure: no model is loaded.
"""

from __future__ import annotations

import math

import pytest

from gpt_demo.generation import GenerationParams


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("temperature", -0.1, "0 <= temperature <= 2"),
        ("temperature", 2.5, "0 <= temperature <= 2"),
        ("top_p", 0, "0 < top_p <= 1"),
        ("top_p", 1.5, "0 < top_p <= 1"),
        ("max_tokens", 0, "1 <= max_tokens"),
        ("frequency_penalty", 2.1, "-2 <= frequency_penalty <= 2"),
        ("frequency_penalty", -3, "-2 <= frequency_penalty <= 2"),
        ("presence_penalty", 2.5, "-2 <= presence_penalty <= 2"),
        ("presence_penalty", -2.01, "-2 <= presence_penalty <= 2"),
        ("n", 0, "1 <= n <= 20"),
        ("n", 21, "1 <= n <= 20"),
        ("best_of", 21, "1 <= best_of <= 20"),
        ("seed", -1, "0 <= seed"),
        ("top_logprobs", 21, "0 <= top_logprobs <= 20"),
    ],
)
def test_out_of_range_names_field_value_and_range(field, value, allowed):
    kwargs = {field: value}
    if field == "top_logprobs":
        kwargs["logprobs"] = True  # so the range, not the logprobs rule, is what fails
    with pytest.raises(ValueError) as err:
        GenerationParams(**kwargs)
    message = str(err.value)
    assert f"{field}={value!r}" in message, message
    assert allowed in message, message


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", 0), ("temperature", 2), ("top_p", 1), ("top_p", 1e-6), ("max_tokens", 1),
        ("frequency_penalty", -2), ("frequency_penalty", 2), ("presence_penalty", -2), ("presence_penalty", 2),
        ("n", 20), ("seed", 0),
    ],
)
def test_the_edges_of_each_range_are_allowed(field, value):
    assert getattr(GenerationParams(**{field: value}), field) == value


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("temperature", "hot", "a number"),
        ("top_p", "hot", "a number"),
        ("frequency_penalty", "hot", "a number"),
        ("presence_penalty", "hot", "a number"),
        ("max_tokens", "hot", "an integer"),
        ("seed", "hot", "an integer"),
        ("n", "hot", "an integer"),
        ("temperature", True, "a number"),  # bool is an int subclass; still refused
        ("temperature", math.nan, "a number"),
        ("max_tokens", 1.5, "an integer"),
        ("seed", 1.0, "an integer"),
    ],
)
def test_non_numbers_are_refused_naming_field_and_value(field, value, kind):
    with pytest.raises(ValueError) as err:
        GenerationParams(**{field: value})
    message = str(err.value)
    assert f"{field}={value!r}" in message and f"it must be {kind}" in message, message


def test_best_of_must_cover_n():
    with pytest.raises(ValueError, match=r"best_of=2 is out of range; allowed: 3 <= best_of <= 20"):
        GenerationParams(n=3, best_of=2)
    assert GenerationParams(n=2, best_of=5).candidates == 5
    assert GenerationParams(n=2, best_of=2).candidates == 2
    assert GenerationParams(n=2).candidates == 2


@pytest.mark.parametrize(
    "stop, shown",
    [
        (["a", "b", "c", "d", "e"], "stop=['a', 'b', 'c', 'd', 'e']"),
        ([""], "stop=['']"),
        ("", "stop=['']"),
        (["ok", ""], "stop=['ok', '']"),
        ([1], "stop=[1]"),
    ],
)
def test_bad_stop_sequences_name_the_value_and_the_limit(stop, shown):
    with pytest.raises(ValueError) as err:
        GenerationParams(stop=stop)
    message = str(err.value)
    assert shown in message and "up to 4 non-empty strings" in message, message


def test_stop_is_normalised_to_a_tuple():
    assert GenerationParams(stop="\n").stop == ("\n",)
    assert GenerationParams(stop=["a", "b"]).stop == ("a", "b")
    assert GenerationParams(stop=None).stop == ()
    assert GenerationParams(stop=["1", "2", "3", "4"]).stop == ("1", "2", "3", "4")  # four is the maximum


def test_top_logprobs_needs_logprobs():
    with pytest.raises(ValueError, match=r"top_logprobs=3 is not allowed unless logprobs=True"):
        GenerationParams(top_logprobs=3)
    assert GenerationParams(logprobs=True, top_logprobs=3).top_logprobs == 3
    with pytest.raises(ValueError, match=r"logprobs=1 is not allowed; it must be true or false"):
        GenerationParams(logprobs=1)


def test_from_dict_rejects_unknown_keys_naming_each():
    with pytest.raises(ValueError) as err:
        GenerationParams.from_dict({"temprature": 0.5, "max_length": 9, "top_p": 0.5})
    message = str(err.value)
    assert "temprature" in message and "max_length" in message
    assert "known:" in message and "temperature" in message  # points at the right spelling


def test_from_dict_builds_validates_and_round_trips():
    params = GenerationParams.from_dict({"temperature": 0.5, "stop": ["x"], "seed": None})
    assert params.temperature == 0.5 and params.stop == ("x",) and params.seed is None
    assert GenerationParams.from_dict(params.to_dict()) == params
    with pytest.raises(ValueError, match=r"top_p=2"):
        GenerationParams.from_dict({"top_p": 2})


def test_replace_validates_and_ignores_none():
    params = GenerationParams(temperature=0.5, max_tokens=20)
    changed = params.replace(max_tokens=7, seed=None)
    assert changed.max_tokens == 7 and changed.temperature == 0.5 and changed.seed is None
    assert params.max_tokens == 20  # frozen: the original is untouched
    with pytest.raises(ValueError, match=r"max_tokens=0 is out of range"):
        params.replace(max_tokens=0)
    with pytest.raises(ValueError, match=r"best_of=1 is out of range; allowed: 2 <= best_of"):
        GenerationParams(n=1, best_of=1).replace(n=2)


def test_greedy_means_temperature_zero():
    assert GenerationParams(temperature=0).greedy
    assert not GenerationParams(temperature=0.01).greedy
