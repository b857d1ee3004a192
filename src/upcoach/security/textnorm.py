"""The one text normaliser every detector reads through: a canonical form that obfuscation cannot dodge.

Attackers (and careless pastes) hide "ignore previous instructions", "HIV" or an e-mail address behind zero-width
characters, soft hyphens, control characters, Cyrillic look-alikes, full-width letters, leetspeak or an encoding.
No detector reads raw text:

- ``clean`` undoes the cosmetic tricks (NFKC, invisibles, homoglyphs, case, whitespace runs): what the injection
  classifier, the special-category rules (after ``fold_accents``), the routing features and the journal themes read;
- ``normalize`` additionally folds leetspeak, which only the injection rules want (the classifier would lose real
  digits such as "5 hours");
- ``view`` is the case-preserving form the PII detectors read, with an offset map back to the original, so a
  finding redacts exactly the characters the user wrote (the text sent on is the original with placeholders, never
  the normalised form: non-Latin scripts are not folded to Latin in what leaves);
- ``decoded_payloads`` finds base64 and rot13 payloads so the injection detector can scan what they say.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

# Invisible or formatting characters that render as nothing: zero-width space/joiners, bidi marks and
# overrides, word joiner and invisible operators, BOM, soft hyphen, Hangul fillers, variation selectors and
# the whole tag block (used to smuggle ASCII invisibly, "ASCII smuggling"), every other format character (Cf), and
# the control characters that are not whitespace (a NUL inside "H\x00IV" splits the word for a regex, not a model).
_INVISIBLE_RANGES = (
    (0x0000, 0x0008),
    (0x000E, 0x001B),
    (0x007F, 0x0084),
    (0x0086, 0x009F),
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF9, 0xFFFB),
    (0x0600, 0x0605),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE007F),
    (0xE0100, 0xE01EF),
)
_INVISIBLE: dict[int, None] = {cp: None for lo, hi in _INVISIBLE_RANGES for cp in range(lo, hi + 1)}

# Cyrillic and Greek letters that look like Latin ones, and curly quotes (so rules need only straight ones).
# Capitals map to the capital they look like, so the case-preserving ``view`` keeps "Аnna" a capitalised name;
# some capitals look like a different Latin letter than their lower case (Greek Η looks like H, η like n).
_HOMOGLYPHS = {
    # Cyrillic
    "А": "A", "а": "a", "В": "B", "в": "b", "С": "C", "с": "c", "Е": "E", "е": "e", "Ё": "E", "ё": "e",
    "Н": "H", "н": "h", "һ": "h", "І": "I", "і": "i", "Ї": "I", "ї": "i", "Ј": "J", "ј": "j", "К": "K",
    "к": "k", "Ӏ": "l", "ӏ": "l", "М": "M", "м": "m", "О": "O", "о": "o", "Р": "P", "р": "p", "Ԛ": "Q",
    "ԛ": "q", "Ѕ": "S", "ѕ": "s", "Т": "T", "т": "t", "У": "Y", "у": "y", "Х": "X", "х": "x", "Ԁ": "D",
    "ԁ": "d", "Ԝ": "W", "ԝ": "w", "Ү": "Y", "ү": "y",
    # Greek
    "Α": "A", "α": "a", "Β": "B", "β": "b", "Ε": "E", "ε": "e", "Ζ": "Z", "Η": "H", "η": "n", "Ι": "I",
    "ι": "i", "Κ": "K", "κ": "k", "Μ": "M", "Ν": "N", "ν": "v", "Ο": "O", "ο": "o", "Ρ": "P", "ρ": "p",
    "Τ": "T", "τ": "t", "Υ": "Y", "υ": "u", "Χ": "X", "χ": "x", "ϲ": "c", "Ϲ": "C", "ϳ": "j", "ω": "w",
    "γ": "y",
    # Latin variants and typographic quotes that NFKC keeps
    "ɑ": "a", "ɡ": "g", "ı": "i", "ȷ": "j", "ſ": "s", "‘": "'", "’": "'", "ʼ": "'", "‚": "'", "“": '"', "”": '"',
    "„": '"', "«": '"', "»": '"',
}  # fmt: skip
_LEET = {"1": "i", "0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}

_LOOKALIKE_TABLE: dict[int, str | None] = {**_INVISIBLE, **{ord(k): v for k, v in _HOMOGLYPHS.items()}}
# Arabic vowel marks and hamza seats say nothing about an instruction ("انسَ" is "انس", "أظهر" is "اظهر"): the
# injection rules read them folded, like leetspeak (the special-category rules get this from ``fold_accents``).
_ARABIC_FOLD: dict[str, str | None] = {
    **{chr(cp): None for cp in range(0x064B, 0x0653)},
    "\u0670": None,
    "\u0623": "\u0627",
    "\u0625": "\u0627",
    "\u0622": "\u0627",
}
_LEET_TABLE = str.maketrans({**_LEET, **_ARABIC_FOLD})
_ARABIC_TABLE = str.maketrans(_ARABIC_FOLD)


def rule_form(pattern: str) -> str:
    """A rule's pattern in the form of the text ``normalize`` gives: NFKC, look-alikes mapped (Turkish ı reads as
    i), Arabic marks folded; not case-folded or leet-folded, which would change ``\\S`` or ``{0,3}``."""
    return unicodedata.normalize("NFKC", pattern).translate(_LOOKALIKE_TABLE).translate(_ARABIC_TABLE)


def _char_class(codepoints: Iterable[int]) -> re.Pattern[str]:
    # Written as ranges: a class listing hundreds of single characters is matched by linear scan (~1 µs a char).
    ranges: list[list[int]] = []
    for cp in sorted(set(codepoints)):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return re.compile("[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges) + "]")


# str.translate with a dict costs a lookup per character; a character-class search runs in C, so the tables are
# only applied to the rare message that contains something to map.
_INVISIBLE_RE = _char_class(_INVISIBLE)
# Only BMP characters: astral ranges make a class several times slower, and NFKC never yields the astral
# invisibles (tag characters), which the first step of every pass has already removed.
_LOOKALIKE_RE = _char_class(cp for cp in _LOOKALIKE_TABLE if cp < 0x10000)
_LEET_RE = _char_class(ord(k) for k in (*_LEET, *_ARABIC_FOLD))
_ASCII_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
# Anything ``view`` would change: non-ASCII (NFKC, look-alikes, invisibles) or an ASCII control character.
_NEEDS_VIEW = re.compile(r"[^\x09-\x0d\x1c-\x7e]")
_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZabcdefghijklm"
)

# Each removal or mapping can create a new NFKC composition ("e" + ZWSP + U+0301 → "é" once the ZWSP is gone),
# so passes repeat until nothing changes; in practice the first pass is already the fixed point.
_MAX_PASSES = 4
_DOTTED_I = "i\u0307"


def _pass(text: str, fold_leet: bool) -> str:
    if _INVISIBLE_RE.search(text):
        text = _INVISIBLE_RE.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    if _LOOKALIKE_RE.search(text):
        text = text.translate(_LOOKALIKE_TABLE)
    text = text.casefold()
    if _DOTTED_I in text:  # Turkish İ case-folds to i + a combining dot: "TALİMAT" must read as "talimat"
        text = text.replace(_DOTTED_I, "i")
    if fold_leet and _LEET_RE.search(text):
        text = text.translate(_LEET_TABLE)
    return " ".join(text.split())


def _is_fixed(text: str, fold_leet: bool) -> bool:
    """True when ``_pass`` would return ``text`` unchanged (``text`` is already whitespace-collapsed)."""
    return (
        unicodedata.is_normalized("NFKC", text)
        and not _LOOKALIKE_RE.search(text)
        and not (fold_leet and _LEET_RE.search(text))
        and text.casefold() == text
        and _DOTTED_I not in text
    )


def _fixpoint(text: str, fold_leet: bool) -> str:
    text = _pass(text, fold_leet)
    for _ in range(_MAX_PASSES - 1):
        if _is_fixed(text, fold_leet):
            break
        text = _pass(text, fold_leet)
    return text


def clean(text: str) -> str:
    """NFKC, invisibles stripped, homoglyphs mapped to Latin, case-folded, whitespace collapsed."""
    if text.isascii() and not _ASCII_CONTROL_RE.search(text):  # the common case: only case and whitespace change
        return " ".join(text.lower().split())
    return _fixpoint(text, fold_leet=False)


def fold_leet(cleaned: str) -> str:
    """``normalize`` for a text that is already in ``clean`` form (saves the scan a second clean)."""
    if cleaned.isascii():
        return cleaned.translate(_LEET_TABLE)
    return _fixpoint(cleaned, fold_leet=True)


def normalize(text: str) -> str:
    """``clean`` plus leetspeak folding (1→i, 0→o, 3→e, 4→a, 5→s, 7→t, @→a, $→s) and Arabic vowel marks and hamza
    seats folded: the form the injection rules match on."""
    return fold_leet(clean(text))


# Kana voicing marks are letters' identity, not accents: without them ゲイ (gay) reads as ケイ (a first name) and
# がん (cancer) as かん. They are kept and the kana recomposed.
_KEEP_MARKS = frozenset("\u3099\u309a")


def fold_accents(cleaned: str) -> str:
    """``clean`` output without diacritics ("depressão" and "depressao" read alike): for keyword rules.

    Arabic vowel marks and hamza seats fold too (أ, إ and آ read as ا); Devanagari loses nukta and virama, the same
    in the text and in the rules; Japanese keeps its voicing marks."""
    if cleaned.isascii():
        return cleaned
    folded = "".join(
        ch for ch in unicodedata.normalize("NFKD", cleaned) if not unicodedata.combining(ch) or ch in _KEEP_MARKS
    )
    return unicodedata.normalize("NFC", folded) if any(mark in folded for mark in _KEEP_MARKS) else folded


class View:
    """A normalised form of a text and, for each of its characters, the span of the original it came from.

    Built by ``view``; detectors search ``text`` and translate what they find with ``span``.
    """

    __slots__ = ("original", "text", "_starts", "_ends")

    def __init__(self, original: str, text: str, starts: list[int] | None, ends: list[int] | None) -> None:
        self.original = original
        self.text = text
        self._starts = starts  # None: the identity (nothing changed)
        self._ends = ends

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span behind ``text[start:end]`` (an empty span maps to an empty one)."""
        if self._starts is None or self._ends is None:
            return start, end
        if end <= start:
            at = self._starts[start] if start < len(self._starts) else len(self.original)
            return at, at
        return self._starts[start], self._ends[end - 1]


def view(text: str) -> View:
    """The case-preserving normal form (NFKC, invisibles removed, homoglyphs mapped) with its offset map.

    Whitespace is kept as it is: line breaks and double spaces carry meaning for the PII rules.
    """
    if not _NEEDS_VIEW.search(text):
        return View(text, text, None, None)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    # A character and the combining marks after it are normalised together: NFKC composes across them, and an
    # invisible character between them ("e", U+200B, U+0301) is gone before they meet.
    clusters: list[tuple[int, int, str]] = []
    for i, ch in enumerate(text):
        if ord(ch) in _INVISIBLE:
            continue
        if clusters and unicodedata.combining(ch):
            first, _, chars = clusters[-1]
            clusters[-1] = (first, i + 1, chars + ch)
        else:
            clusters.append((i, i + 1, ch))
    for first, last, chars in clusters:
        piece = unicodedata.normalize("NFKC", chars)
        if _LOOKALIKE_RE.search(piece):
            piece = unicodedata.normalize("NFKC", piece.translate(_LOOKALIKE_TABLE))
        out.append(piece)
        starts.extend([first] * len(piece))
        ends.extend([last] * len(piece))
    return View(text, "".join(out), starts, ends)


_PRIME = np.uint64(1_000_003)


def codepoints(text: str) -> np.ndarray:
    """The text as a uint64 array of code points (lone surrogates kept: they are valid in a Python str)."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4").astype(np.uint64)


def ngram_hashes(points: np.ndarray, sizes: Iterable[int]) -> np.ndarray:
    """64-bit polynomial hashes of every n-gram of the given sizes, all at once (uint64 wraps on purpose).

    Character n-grams built as Python strings cost ~0.3 µs each; this costs a few µs per thousand.
    """
    parts = []
    for n in sizes:
        count = len(points) - n + 1
        if count <= 0:
            continue
        acc = np.full(count, n, dtype=np.uint64)
        for j in range(n):
            acc = acc * _PRIME + points[j : j + count]
        parts.append(acc)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def string_hashes(strings: list[str]) -> np.ndarray:
    """The ``ngram_hashes`` value of each string taken whole."""
    hashes = np.zeros(len(strings), dtype=np.uint64)
    by_length: dict[int, list[int]] = {}
    for i, item in enumerate(strings):
        by_length.setdefault(len(item), []).append(i)
    for n, rows in by_length.items():
        points = codepoints("".join(strings[i] for i in rows)).reshape(len(rows), n)
        acc = np.full(len(rows), n, dtype=np.uint64)
        for j in range(n):
            acc = acc * _PRIME + points[:, j]
        hashes[rows] = acc
    return hashes


def rot13(text: str) -> str:
    return text.translate(_ROT13)


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_MAX_PAYLOADS = 8
_MAX_PAYLOAD_CHARS = 8192
# Words an injection payload almost always contains; rot13 is only worth decoding when these appear after it,
# which keeps ordinary text (whose rot13 is gibberish) out of the second scan.
_ROT13_KEYWORDS = (
    "ignor",
    "instruction",
    "previous",
    "disregard",
    "prompt",
    "system",
    "password",
    "access granted",
    "jailbreak",
    "pretend",
    "reveal",
    "forget",
    "anweisung",
    "instruccion",
    "istruzion",
    "instruç",
    "you are",
    "act as",
    "rules",
    "unfiltered",
    "restrict",
    "developer",
    "regeln",
    "règles",
    "reglas",
    "regole",
    "regras",
)
_ROT13_ENCODED_KEYWORDS = tuple(rot13(word) for word in _ROT13_KEYWORDS)


def _decode_base64(run: str) -> str | None:
    run = run.rstrip("=")
    run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
    padded = run + "=" * (-len(run) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_" if ("-" in run or "_" in run) else None, validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if len(decoded) < 8:
        return None
    printable = sum(1 for ch in decoded if ch.isprintable() or ch in "\n\r\t")
    letters = sum(1 for ch in decoded if ch.isalpha())
    # Random bytes are rarely valid UTF-8 and almost never mostly printable with real letters in them.
    if printable / len(decoded) < 0.9 or letters < len(decoded) * 0.4:
        return None
    return decoded


def decoded_payloads(text: str, cleaned: str) -> list[tuple[str, str]]:
    """Embedded payloads worth a second scan, as ``(kind, decoded text)``; kind is "base64" or "rot13".

    ``text`` is the raw message (base64 is case-sensitive), ``cleaned`` its ``clean`` form.
    """
    found: list[tuple[str, str]] = []
    if len(text) >= 16:
        visible = text if text.isascii() else _INVISIBLE_RE.sub("", text)
        for match in _BASE64_RUN.finditer(visible):
            run = match.group()
            if run.isalpha() and (run.islower() or run.isupper()):
                continue  # a long plain word or identifier, not an encoding
            decoded = _decode_base64(run[:_MAX_PAYLOAD_CHARS])
            if decoded is not None:
                found.append(("base64", decoded))
                if len(found) >= _MAX_PAYLOADS:
                    break
    if any(word in cleaned for word in _ROT13_ENCODED_KEYWORDS):
        found.append(("rot13", rot13(cleaned)))
    return found
