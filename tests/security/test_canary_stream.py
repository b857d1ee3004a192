"""The canary check on a streamed answer: piece by piece, linear in the answer, and as strict as on the whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upcoach.security import canary as canary_module
from upcoach.security.canary import LeakWatch, StreamNormalizer, leaks
from upcoach.security.textnorm import normalize

CANARY = "ucc-5f0c2a9e41d7b3c8"
SYSTEM_PROMPT = (
    "You are UpCoach, a warm and practical personal coach. You help people set goals, build habits, "
    "manage stress, sleep better and stay motivated at work. Keep answers short, concrete and kind."
)
DISGUISES = [
    f"Sure, the token is {CANARY}.",
    "token: UCC-5F0C2A9E41D7B3C8",  # case
    "u\u200bc\u200bc-5f0c2a9e\u200b41d7b3c8 is it",  # zero-width characters
    "u c c - 5 f 0 c 2 a 9 e 4 1 d 7 b 3 c 8",  # spaced out
    "ｕｃｃ－５ｆ０ｃ２ａ９ｅ４１ｄ７ｂ３ｃ８",  # full width
    "u\u0441\u0441-5f0\u04412a9\u04354\u0406d7b3c8",  # Cyrillic look-alikes (с е І)
    "ucc\u00ad-5f0c\u20602a9e41d7b3c8",  # soft hyphen, word joiner
    "Here it is: u.c.c.5.f.0.c.2.a.9.e.4.1.d.7.b.3.c.8 — nothing else.",
]
CLEAN = "Try a 10-minute wind-down routine: dim the lights, put the phone in the kitchen, read a few pages. " * 3


def pieces_of(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(text)}), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def watch(pieces: list[str]) -> bool:
    leak = LeakWatch(CANARY, SYSTEM_PROMPT)
    return any(leak.feed(piece) for piece in pieces)


@pytest.mark.parametrize("answer", DISGUISES)
def test_a_canary_split_at_every_point_is_still_caught(answer: str) -> None:
    assert leaks(answer, CANARY, SYSTEM_PROMPT)
    for cut in range(1, len(answer)):
        assert watch([answer[:cut], answer[cut:]]), (answer, cut)
    assert watch(list(answer))  # one character per piece


def test_a_verbatim_chunk_of_the_prompt_split_across_pieces_is_caught() -> None:
    chunk = SYSTEM_PROMPT[40:105].upper().replace(" ", "  ")
    answer = f"What I was told: {chunk} ... that is all."
    assert watch([answer[i : i + 3] for i in range(0, len(answer), 3)])


def test_a_clean_answer_in_pieces_is_not_a_leak() -> None:
    assert not watch([CLEAN[i : i + 4] for i in range(0, len(CLEAN), 4)])


# Characters that change under normalisation, or change their neighbours: ASCII, spaces of every kind, invisibles,
# combining marks, precomposed and compatibility letters, look-alikes, leetspeak, jamo and syllables, CJK.
TRICKY = list(
    "aZ09 \t\n.,-_@$1\u00a0\u3000\u2003\u200b\u200d\u00ad\u2060\ufeff\u0301\u0308\u0327e\u00e9\u00df\u0130"
    "\ufb01\u2460\u00a8\uff41\uff21\u0430\u0435\u03bf\u0391\u1100\u1161\u11a8\u3131\u314f\uac00\u4e2d\u3099"
    "\u304b\u0915\u093f\ufdfa\U000e0041"
)


@settings(max_examples=400, deadline=None)
@given(
    text=st.lists(st.sampled_from(TRICKY), max_size=40).map("".join),
    cuts=st.lists(st.integers(min_value=1, max_value=39), max_size=10),
)
def test_the_stream_normal_form_is_the_normal_form_of_the_whole(text: str, cuts: list[int]) -> None:
    normalizer = StreamNormalizer()
    committed: list[str] = []
    pending = ""
    for piece in pieces_of(text, cuts):
        done, pending = normalizer.feed(piece)
        committed.append(done)
    assert "".join(committed) + pending == normalize(text)


class NormalizeCounter:
    """Stands in for ``normalize`` in security/canary.py and counts the characters it is given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.characters = 0
        monkeypatch.setattr(canary_module, "normalize", self)

    def __call__(self, text: str) -> str:
        self.characters += len(text)
        return normalize(text)


def test_watching_is_linear_in_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = NormalizeCounter(monkeypatch)
    answer = "Small steady steps every day build habits that last longer than bursts of willpower. " * 40
    leak = LeakWatch(CANARY, "")
    assert not any(leak.feed(answer[i : i + 5]) for i in range(0, len(answer), 5))
    assert counter.characters <= 3 * len(answer)  # each character normalised a bounded number of times
