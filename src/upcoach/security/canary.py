"""Output-side check for system-prompt leakage (OWASP LLM07).

A random canary is appended to the system prompt; if the model's answer contains it, or a long verbatim run of
the system prompt, the prompt leaked, whatever trick the user found. Both checks look at the ``normalize`` form
as well, so a leak spelled in full-width letters, with zero-width characters or in leetspeak still counts; the
canary is also compared with every non-alphanumeric character dropped ("u c c - 9 f …" or "ucc9f…").

A streamed answer is watched piece by piece (``LeakWatch``) in time linear in its length: each piece is normalised
once, with only the short stretch since the last safe boundary normalised again (see ``StreamNormalizer``), and
only the windows that end in new text are searched. ``leaks`` is the same check on a whole answer.

A system prompt that tells the model to quote a passage verbatim (a crisis-line text, a disclaimer) would make
every such answer a "leak": keep passages meant for users out of ``system_prompt`` when calling ``leaks``.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from functools import lru_cache

from upcoach.security.textnorm import normalize

CANARY_PREFIX = "ucc"
LEAK_CHUNK_CHARS = 60
_NOT_ALNUM = re.compile(r"[\W_]+")
# Too short a token could turn up by chance once spaces and punctuation are gone.
_MIN_COMPACT_TOKEN = 12
# Code points whose normalised form depends on their neighbours: look-alike fillers and Hangul jamo (which NFKC
# composes into syllables, also from their compatibility forms).
_JOINING = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xD7B0, 0xD7FF), (0xFFA0, 0xFFDC), (0x115F, 0x1160))


def make_canary() -> str:
    """A fresh random token, e.g. ``ucc-5f0c2a9e41d7b3c8`` (64 random bits)."""
    return f"{CANARY_PREFIX}-{secrets.token_hex(8)}"


def guard_system_prompt(system_prompt: str, canary: str) -> str:
    """The system prompt with the canary on a comment-like last line."""
    return f"{system_prompt.rstrip()}\n\n<!-- {canary} -->"


def _compact(text: str) -> str:
    return _NOT_ALNUM.sub("", text)


@lru_cache(maxsize=4096)
def is_stable(char: str) -> bool:
    """Whether ``normalize`` maps this character the same whatever stands around it, to something that neither
    starts nor ends with whitespace: printable ASCII other than space, and letters and digits that are already in
    NFKC form, combine with nothing before them and are not invisible or Hangul jamo."""
    if char.isascii():
        return char.isprintable() and not char.isspace()
    if not char.isalnum() or unicodedata.combining(char) or unicodedata.normalize("NFKC", char) != char:
        return False
    code = ord(char)
    return not any(lo <= code <= hi for lo, hi in _JOINING) and normalize(char) != ""


class StreamNormalizer:
    """``normalize`` of a growing text, fed piece by piece, without normalising the whole text again each time.

    The text is cut at safe boundaries: between two ``is_stable`` characters (nothing can compose, reorder or
    vanish across them, so the normal form of the whole is the normal forms of the parts, joined), or between a
    stable character and ASCII whitespace (joined with one space, as whitespace collapses). ``feed`` returns the
    normal form that is final (``committed``) and that of the text since the last boundary (``pending``, which
    the next piece may still change); ``committed`` pieces followed by the last ``pending`` are ``normalize`` of
    everything fed. Natural text has a boundary every few characters; text with none only costs what
    normalising it whole would, and is never judged on less than all of it."""

    def __init__(self) -> None:
        self._pending = ""
        self._started = False  # something non-blank was committed: a later whitespace boundary becomes a space

    def feed(self, piece: str) -> tuple[str, str]:
        self._pending += piece
        text = self._pending
        cut = 0
        for index in range(len(text) - 1, 0, -1):
            after = text[index]
            if is_stable(text[index - 1]) and (is_stable(after) or (after.isascii() and after.isspace())):
                cut = index
                break
        committed = ""
        if cut:
            committed = self._join(text[:cut])
            self._pending = text[cut:]
        pending = normalize(self._pending)
        if pending and self._started and self._pending[0].isspace():
            pending = " " + pending
        return committed, pending

    def _join(self, part: str) -> str:
        normal = normalize(part)
        if not normal:
            return ""
        joined = " " + normal if self._started and part[0].isspace() else normal
        self._started = True
        return joined


@lru_cache(maxsize=64)
def _prompt_chunks(system_prompt: str) -> frozenset[str]:
    """Every LEAK_CHUNK_CHARS-long run of the normalised prompt (any common run that long contains one of them)."""
    prompt = normalize(system_prompt)
    if len(prompt) < LEAK_CHUNK_CHARS:
        return frozenset()
    return frozenset(prompt[i : i + LEAK_CHUNK_CHARS] for i in range(len(prompt) - LEAK_CHUNK_CHARS + 1))


class LeakWatch:
    """Watches one answer, piece by piece: ``feed`` is True once the answer so far reveals the canary or a
    verbatim chunk of the system prompt; the verdict on the whole answer is that of ``leaks``."""

    def __init__(self, canary: str, system_prompt: str) -> None:
        self._canary = canary
        self._token = normalize(canary) if canary else ""
        compact = _compact(self._token)
        self._compact_token = compact if len(compact) >= _MIN_COMPACT_TOKEN else ""
        self._chunks = _prompt_chunks(system_prompt)
        self._normalizer = StreamNormalizer()
        # Just enough of what came before for a match that ends in the next piece.
        self._raw = ""
        self._said = ""
        self._compacted = ""

    def feed(self, piece: str) -> bool:
        raw = self._raw + piece
        if self._canary and self._canary in raw:
            return True
        self._raw = raw[-(len(self._canary) - 1) :] if len(self._canary) > 1 else ""
        committed, pending = self._normalizer.feed(piece)
        said = self._said + committed + pending
        if self._token and self._token in said:
            return True
        compacted = self._compacted + _compact(committed)
        if self._compact_token and self._compact_token in compacted + _compact(pending):
            return True
        if self._chunks and any(
            said[i : i + LEAK_CHUNK_CHARS] in self._chunks for i in range(len(said) - LEAK_CHUNK_CHARS + 1)
        ):
            return True
        keep = max(len(self._token), LEAK_CHUNK_CHARS) - 1
        self._said = (self._said + committed)[-keep:]
        self._compacted = compacted[-(len(self._compact_token) - 1) :] if self._compact_token else ""
        return False


def leaks(answer: str, canary: str, system_prompt: str) -> bool:
    """True if ``answer`` reveals the canary or a verbatim chunk (≥ 60 chars) of ``system_prompt``."""
    return LeakWatch(canary, system_prompt).feed(answer)
