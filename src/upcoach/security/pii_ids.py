"""Identifiers that prove themselves by a check digit: payment cards, IBANs and national identity numbers.

Each detector yields ``(type, start, end)`` spans over the normalised text; `security/pii.py` turns them into
entities and resolves overlaps. The check digits are python-stdnum's (maintained, tested against the issuing
bodies' specifications), not our own arithmetic; what stays here is where such a number may sit in prose and which
context a number needs when its checksum alone would match too many ordinary numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from stdnum import iban, luhn, verhoeff
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.jp import in_ as my_number
from stdnum.nl import bsn
from stdnum.pl import pesel
from stdnum.tr import tckimlik

Span = tuple[str, int, int]


def card_network_ok(d: str) -> bool:
    """Issuer prefix and length of the networks people pay with; a Luhn pass alone is 1 in 10 for any number."""
    n, two, four = len(d), d[:2], d[:4]
    if d[0] == "4":
        return n in (13, 16, 19)  # Visa
    if two in ("34", "37"):
        return n == 15  # Amex
    if "51" <= two <= "55" or "2221" <= four <= "2720":
        return n == 16  # Mastercard
    if two in ("30", "36", "38", "39"):
        return n in (14, 16, 19)  # Diners
    if two == "35":
        return n in (16, 19)  # JCB
    return two in ("50", "56", "57", "58", "60", "62", "63", "64", "65", "67") and 16 <= n <= 19  # Maestro, Discover


def card_ok(digits: str) -> bool:
    return card_network_ok(digits) and len(set(digits)) > 1 and luhn.is_valid(digits)


_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2} ?$")
_DIGIT_RUN = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,}(?![\w])")


def cards(text: str) -> Iterator[Span]:
    for m in _DIGIT_RUN.finditer(text):
        if _IBAN_HEAD.search(text, max(0, m.start() - 5), m.start()):
            continue  # the digits of a (mistyped) IBAN are not a card
        # A card may sit next to other numbers (expiry, CVC, a second card): from each digit group on, take the
        # longest run of whole groups that is a valid card, then go on after it.
        groups = [(m.start() + g.start(), m.start() + g.end()) for g in re.finditer(r"\d+", m.group())]
        i = 0
        while i < len(groups):
            found, digits = 0, ""
            for j in range(i, len(groups)):
                digits += text[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                if card_ok(digits):
                    found = j + 1
            if found:
                yield "CARD", groups[i][0], groups[found - 1][1]
            i = found or i + 1


_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?= ?[A-Za-z0-9])")
_IBAN_MAX = 34  # ISO 13616: no country's IBAN is longer


def ibans(text: str) -> Iterator[Span]:
    for m in _IBAN_START.finditer(text):
        compact, pos, best = m.group().upper(), m.end(), None
        # Grow the candidate character by character (single spaces between groups allowed) and keep the longest
        # prefix stdnum accepts: the country's length and BBAN format and the mod-97 check (not the national check
        # digits inside the BBAN: a value that passes mod 97 is an account number worth hiding even if mistyped).
        while len(compact) < _IBAN_MAX and pos < len(text):
            if text[pos].isascii() and text[pos].isalnum():
                compact += text[pos].upper()
                pos += 1
                if not (pos < len(text) and text[pos].isalnum()) and iban.is_valid(compact, check_country=False):
                    best = pos
            elif text[pos] == " " and pos + 1 < len(text) and text[pos + 1].isalnum():
                pos += 1
            else:
                break
        if best is not None:
            yield "IBAN", m.start(), best


def _context(text: str, start: int, pattern: re.Pattern[str], window: int = 40) -> bool:
    return pattern.search(text, max(0, start - window), start) is not None


_SSN = re.compile(r"(?<![\d-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\d-])")
_SSN_CTX = re.compile(r"(?i)\b(?:ssn|social security)")
_NINO = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_STEUER = re.compile(r"(?<!\d)(?<!\d )[1-9]\d(?: ?\d){9}(?![\d])")
_STEUER_CTX = re.compile(r"(?i)steuer-?id|steuer-?identifikationsnummer|\bidnr\b|identifikationsnummer|tax id")
_NIR = re.compile(r"(?<![\w])[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}(?!\w)")
_DNI = re.compile(r"(?<![\w-])(?:\d{8}|[XYZxyz]-?\d{7})-?[A-Za-z](?![\w-])")
_CF_D = "[0-9LMNPQRSTUV]"
_CF = re.compile(rf"(?i)(?<!\w)[A-Z]{{6}}{_CF_D}{{2}}[ABCDEHLMPRST]{_CF_D}{{2}}[A-Z]{_CF_D}{{3}}[A-Z](?!\w)")
_BSN = re.compile(r"(?<![\d.])\d{4}\.?\d{2}\.?\d{3}(?![\d])")
_BSN_CTX = re.compile(r"(?i)\b(?:bsn|burgerservicenummer|sofi-?nummer|citizen service number)")
_AADHAAR = re.compile(r"(?<!\d)(?<!\d[ -])[2-9]\d{3}([ -]?)\d{4}\1\d{4}(?![\d])")
_AADHAAR_CTX = re.compile(r"(?i)\b(?:aadhaa?r|uidai|uid)|आधार")
# Eleven digits with a birth date and a check digit (PESEL) or two check digits (T.C. kimlik): rare enough by chance
# to hide on the checksum alone. Japan's My Number has one check digit over twelve: only next to its name.
_ELEVEN = re.compile(r"(?<![\d+])\d{11}(?!\d)")
_MY_NUMBER = re.compile(r"(?<!\d)\d{4}[ -]?\d{4}[ -]?\d{4}(?!\d)")
_MY_NUMBER_CTX = re.compile(r"(?i)マイナンバー|個人番号|\bmy ?number\b")


def _spanish_id_ok(value: str) -> bool:
    compact = value.replace("-", "").upper()
    return nie.is_valid(compact) if compact[0] in "XYZ" else dni.is_valid(compact)


def national_ids(text: str) -> Iterator[Span]:
    for m in _SSN.finditer(text):
        area, group, serial = m.group(1), m.group(3), m.group(4)
        valid = area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
        if valid and (m.group(2) == "-" or _context(text, m.start(), _SSN_CTX)):
            yield "NATIONAL_ID", m.start(), m.end()
    for m in _NINO.finditer(text):
        yield "NATIONAL_ID", m.start(), m.end()
    for m in _STEUER.finditer(text):
        if _context(text, m.start(), _STEUER_CTX):
            yield "NATIONAL_ID", m.start(), m.end()
    for m in _NIR.finditer(text):
        if nir.is_valid(m.group().replace(" ", "")):
            yield "NATIONAL_ID", m.start(), m.end()
    for m in _DNI.finditer(text):
        if _spanish_id_ok(m.group()):
            yield "NATIONAL_ID", m.start(), m.end()
    for m in _CF.finditer(text):
        # The check character only: a code whose birth date or municipality letter is off is still someone's
        # (mistyped) tax code, and stdnum's full validation would let it out.
        if codicefiscale.calc_check_digit(m.group()[:15].upper()) == m.group()[-1].upper():
            yield "NATIONAL_ID", m.start(), m.end()
    for m in _BSN.finditer(text):
        if bsn.is_valid(m.group().replace(".", "")) and _context(text, m.start(), _BSN_CTX):
            yield "NATIONAL_ID", m.start(), m.end()
    for m in _ELEVEN.finditer(text):
        if pesel.is_valid(m.group()) or tckimlik.is_valid(m.group()):
            yield "NATIONAL_ID", m.start(), m.end()
    for m in _MY_NUMBER.finditer(text):
        if my_number.is_valid(re.sub(r"\D", "", m.group())) and _context(text, m.start(), _MY_NUMBER_CTX):
            yield "NATIONAL_ID", m.start(), m.end()
    for m in _AADHAAR.finditer(text):
        # Unseparated 12-digit numbers are too common (order numbers) to trust the checksum alone.
        digits = re.sub(r"\D", "", m.group())
        if (
            verhoeff.is_valid(digits)
            and aadhaar.is_valid(digits)
            and (m.group(1) or _context(text, m.start(), _AADHAAR_CTX))
        ):
            yield "NATIONAL_ID", m.start(), m.end()
