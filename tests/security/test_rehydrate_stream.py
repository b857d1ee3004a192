"""Streamed rehydration: the same text as rehydrating the whole answer, however the answer is cut into pieces."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from upcoach.security.guard import StreamRehydrator
from upcoach.security.pii import Redactor

FRAGMENTS = [
    "[PERSON_1]", "PERSON_1", "[person_1]", "EMAIL\\_1", "(EMAIL_1]", "XEMAIL_1", "[EMAIL_2]", "EMAIL_12", "PHONE_1",
    " ", ", ", "ok", "x", "]", "[", "_", "1", "P", "PERS", "\\", "Hi ", ".", "\n", "[EMAIL_1", "EMAIL_", "\\_",
    "[PERSON\\_1]", "url_token_1", "[URL_TOKEN_1]", "URL_TOKEN\\_1", "_P",
]  # fmt: skip


def redactor() -> Redactor:
    r = Redactor()
    r.redact("Anna Schmidt wrote from anna@example.com, call +44 20 7946 0958.")
    return r


def streamed(r: Redactor, pieces: list[str]) -> str:
    rehydrator = StreamRehydrator(r)
    return "".join(rehydrator.feed(piece) for piece in pieces) + rehydrator.flush()


def test_a_placeholder_split_in_any_accepted_form_is_rehydrated() -> None:
    r = redactor()
    for answer in ("Ask PERSON_1 today.", "Write to [email_1] soon", "Call PHONE\\_1, then [PERSON_1]."):
        whole = r.rehydrate(answer)
        assert "Anna" in whole or "@" in whole or "+44" in whole
        for cut in range(1, len(answer)):
            assert streamed(r, [answer[:cut], answer[cut:]]) == whole, (answer, cut)


def test_a_placeholder_glued_to_a_word_across_pieces_stays_as_it_is() -> None:
    r = redactor()
    assert streamed(r, ["X", "PERSON_1 said"]) == r.rehydrate("XPERSON_1 said") == "XPERSON_1 said"
    assert streamed(r, ["[PERSON_1]", "PERSON_1"]) == r.rehydrate("[PERSON_1]PERSON_1")


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(FRAGMENTS), max_size=14), cuts=st.lists(st.integers(1, 80), max_size=8))
def test_streamed_rehydration_equals_rehydrating_the_whole(parts: list[str], cuts: list[int]) -> None:
    r = redactor()
    text = "".join(parts)
    bounds = [0, *sorted({c for c in cuts if c < len(text)}), len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert streamed(r, pieces) == r.rehydrate(text)
