"""What makes a node id or credential usable: one rule for the transport and registration."""

from __future__ import annotations

import pytest

from vectorlay.domain.agent.identity import MAX_REGISTERED_CHARS, identity_problem

SECRET = "tok-Secret-7f3a9c2e41b0"


@pytest.mark.parametrize(
    "value", ["n", "node-7f3a", SECRET, "!~", "a" * MAX_REGISTERED_CHARS, "x" * 100_000]
)
def test_visible_ascii_is_usable(value: str) -> None:
    assert identity_problem("node_token", value) is None


def test_usable_within_the_registration_limit() -> None:
    value = "a" * MAX_REGISTERED_CHARS
    assert identity_problem("node_id", value, max_chars=MAX_REGISTERED_CHARS) is None


def test_empty_is_refused() -> None:
    assert identity_problem("node_id", "") == "node_id is empty"


def test_longer_than_the_limit_is_refused() -> None:
    value = "a" * (MAX_REGISTERED_CHARS + 1)
    assert MAX_REGISTERED_CHARS == 4096
    assert identity_problem("node_id", value, max_chars=MAX_REGISTERED_CHARS) == (
        "node_id is longer than 4096 characters"
    )


@pytest.mark.parametrize(
    "value", [" ", "two words", "line\nbreak", "tab\there", "caf\u00e9", "nul\x00", "del\x7f"]
)
def test_anything_but_visible_ascii_is_refused(value: str) -> None:
    problem = identity_problem("node_token", value)
    assert problem is not None
    assert problem.startswith("node_token has characters outside visible ASCII")


@pytest.mark.parametrize("value", ["", SECRET + " ", "\u00e9" + SECRET, SECRET * 300])
def test_the_answer_never_quotes_the_value(value: str) -> None:
    problem = identity_problem("the credential", value, max_chars=MAX_REGISTERED_CHARS)
    assert problem is not None
    assert SECRET not in problem
