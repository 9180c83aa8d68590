"""The one reader of msgspec's validation wording, pinned so a msgspec change is noticed."""

from __future__ import annotations

import msgspec
import pytest

from vectorlay.domain.decode_errors import explain_validation_error
from vectorlay.errors import InvalidMessage

KNOWN = frozenset({"deploy"})


class _Payload(msgspec.Struct):
    gpu_count: int
    env_vars: dict[str, str] = {}


class _Frame(msgspec.Struct):
    type: str
    payload: _Payload


def _wording(data: bytes) -> str:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(data, type=_Frame)
    return str(info.value)


def test_the_installed_msgspec_words_errors_as_the_reader_expects() -> None:
    # If this fails after a msgspec upgrade, adapt the patterns in
    # vectorlay.domain.decode_errors: decoding still works, but error texts
    # lose their field paths.
    assert _wording(b'{"type":"deploy","payload":{"gpu_count":"1"}}') == (
        "Expected `int`, got `str` - at `$.payload.gpu_count`"
    )
    assert _wording(b'{"type":"deploy","payload":{}}') == (
        "Object missing required field `gpu_count` - at `$.payload`"
    )
    assert _wording(b'{"type":"deploy","payload":{"gpu_count":1,"env_vars":{"A":1}}}') == (
        "Expected `str`, got `int` - at `$.payload.env_vars[...]`"
    )


def test_wording_it_does_not_know_still_gives_a_one_line_error() -> None:
    err = explain_validation_error(
        "Something new happened\nsecond line", b'{"type":"deploy","payload":{}}', KNOWN
    )
    assert isinstance(err, InvalidMessage)
    assert str(err) == "deploy: something new happened"
