"""GenerationParams: OpenAI's names and ranges, and errors that name field, value and range.

    .venv/bin/python -m pytest tests/test_params.py -q
"""

from __future__ import annotations

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
        ("n", 0, "1 <= n <= 20"),
        ("seed", -1, "0 <= seed"),
        ("top_logprobs", 21, "0 <= top_logprobs <= 20"),
    ],
)
def test_out_of_range_names_field_value_and_range(field, value, allowed):
    kwargs = {field: value}
    if field == "top_logprobs":
        kwargs["logprobs"] = True
    with pytest.raises(ValueError) as err:
        GenerationParams(**kwargs)
    message = str(err.value)
    assert f"{field}={value!r}" in message and allowed in message


@pytest.mark.parametrize("field", ["temperature", "top_p", "max_tokens", "seed", "n"])
def test_non_numbers_are_refused(field):
    with pytest.raises(ValueError, match=f"{field}='hot'"):
        GenerationParams(**{field: "hot"})


def test_best_of_must_cover_n():
    with pytest.raises(ValueError, match=r"best_of=2 is out of range; allowed: 3 <= best_of <= 20"):
        GenerationParams(n=3, best_of=2)
    assert GenerationParams(n=2, best_of=5).candidates == 5
    assert GenerationParams(n=2).candidates == 2


def test_stop_sequences():
    assert GenerationParams(stop="\n").stop == ("\n",)
    assert GenerationParams(stop=["a", "b"]).stop == ("a", "b")
    with pytest.raises(ValueError, match="up to 4 non-empty strings"):
        GenerationParams(stop=["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match="stop="):
        GenerationParams(stop=[""])


def test_top_logprobs_needs_logprobs():
    with pytest.raises(ValueError, match="top_logprobs=3 is not allowed unless logprobs=True"):
        GenerationParams(top_logprobs=3)


def test_from_dict_rejects_unknown_keys_and_replace_validates():
    with pytest.raises(ValueError, match="unknown generation parameter.*temprature"):
        GenerationParams.from_dict({"temprature": 0.5})
    params = GenerationParams.from_dict({"temperature": 0.5, "stop": ["x"], "seed": None})
    assert params.temperature == 0.5 and params.stop == ("x",) and params.seed is None
    assert params.replace(max_tokens=7, seed=None).max_tokens == 7
    with pytest.raises(ValueError, match="max_tokens=0"):
        params.replace(max_tokens=0)
    assert GenerationParams.from_dict(params.to_dict()) == params
