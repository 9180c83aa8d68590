"""Secret values are taken out of texts that come from elsewhere."""

from __future__ import annotations

import pytest

from vectorlay.domain.redact import redact_text


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("token=abcd1234-secret", ["abcd", "abcd1234-secret"], "token=<redacted>"),
        ("token=abcd1234-secret", ["abcd1234-secret", "abcd"], "token=<redacted>"),
        ("a=s3cr3t b=s3cr3t", ["s3cr3t"], "a=<redacted> b=<redacted>"),
        ("port 1 is on", ["1", "on"], "port 1 is on"),  # too short to hide anything
        ("nothing here", [], "nothing here"),
    ],
)
def test_every_value_is_replaced_whole(text: str, values: list[str], expected: str) -> None:
    assert redact_text(text, values) == expected
