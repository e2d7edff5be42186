"""The warm path's JSON writer agrees with the json module on everything config.json holds."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.jsonwrite import dumps

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trips_through_json_loads(value: object) -> None:
    assert json.loads(dumps(value)) == value


def test_escapes_control_characters_quotes_and_backslashes() -> None:
    text = 'a"b\\c\nd\te\x00\x1f\x7f\u2028é'
    assert json.loads(dumps(text)) == text
    assert "\n" not in dumps(text) and "\x00" not in dumps(text)


@pytest.mark.parametrize("bad", [1.5, {1: "x"}, b"bytes", object()])
def test_refuses_what_config_json_never_holds(bad: object) -> None:
    with pytest.raises(TypeError):
        dumps(bad)
