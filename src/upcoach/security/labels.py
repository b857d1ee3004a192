"""Personal values a person introduces with a label: "my passport number is X1234567", "Passwort: Sonne123",
"account 12345678, routing 021000021", "numéro client 884213".

The labels are data (``security/data/pii_labels.json``: one row per label and language, for EN, DE, FR, ES, IT, PT,
NL, PL, TR, AR, HI and JA); this module holds only the grammar around them: label, then an optional separator (":",
"=", "#" or the language's copula, "is", "ist", "est", ...), then a value of the shape its type allows. Precision
comes from the shapes, not from the labels:
- identifiers (passport, licence, account, routing, employee, member, customer, policy, patient, tax, national id)
  need digits (at least ``min_digits``) and 4-34 letters or digits: "my account of what happened" or "customer
  number one" are not values;
- licence plates are upper-case groups with a letter and a digit ("AB12 CDE", "B-MW 1234");
- PINs are 4-8 digits;
- passwords, user names and security answers follow a bare noun, so they need a separator ("password reset emails"
  is not a password); after a copula alone ("my password is ...") the value must look made up (a digit or a symbol
  for passwords and user names, a capitalised word for answers), so "my password is longer than yours" is not one.
Callers pass the normalised text (textnorm.view) and get ``(type, start, end)`` spans in it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources

from upcoach.language import UNSPACED

# Type -> (value shape, fewest digits the value must hold).
SHAPES: dict[str, tuple[str, int]] = {
    "PASSWORD": ("secret", 0),
    "PIN": ("pin", 4),
    "PASSPORT": ("id", 2),
    "DRIVER_LICENSE": ("id", 2),
    "TAX_ID": ("id", 5),
    "BANK_ACCOUNT": ("id", 6),
    "ROUTING_NUMBER": ("id", 5),
    "PATIENT_ID": ("id", 3),
    "POLICY_NUMBER": ("id", 3),
    "EMPLOYEE_ID": ("id", 2),
    "MEMBER_ID": ("id", 2),
    "CUSTOMER_ID": ("id", 2),
    "LICENSE_PLATE": ("plate", 1),
    "USERNAME": ("login", 0),
    "SECURITY_ANSWER": ("answer", 0),
}
# Labelled national ids share the type of the checksummed ones (pii.py), so they are not listed above.
TYPES = tuple(SHAPES) + ("NATIONAL_ID",)
_SHAPE_OF = {**SHAPES, "NATIONAL_ID": ("id", 5)}

_QUOTE = re.compile(r"[\"'“”‘’«]?")
_ID_TOKEN = re.compile(r"[^\W_]+(?:[-/.][^\W_]+)*")
_PLATE_TOKEN = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)*(?![\w-])")
_PIN = re.compile(r"\d{4,8}(?![\w])")
# A password or key as people paste it: up to the next space, quote or separator, without closing punctuation.
SECRET_VALUE = r"[^\s\"',;]*[^\s\"',;.!?)\]]"
_SECRET = re.compile(SECRET_VALUE)
_LOGIN = re.compile(r"[\w.@+-]*[\w@]")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_MADE_UP = re.compile(r"[\d\W_]|.[A-Z]")  # a digit, a symbol or an inner capital: not an everyday word


@dataclass(frozen=True)
class _Rule:
    type: str
    pattern: re.Pattern[str]  # every label of this type and kind, to find where one starts
    labels: tuple[re.Pattern[str], ...]  # each label alone, to take the longest that starts there
    needs_separator: bool
    glued: bool  # the value may touch its label (languages written without spaces: "パスワード：Sakura2024")

    def label_end(self, start: int, text: str) -> int:
        """Alternation takes the first label that fits ("placa"), not the longest ("placa do carro")."""
        return max((m.end() for label in self.labels if (m := label.match(text, start))), default=start)


@cache
def _table() -> tuple[tuple[_Rule, ...], re.Pattern[str], frozenset[str]]:
    data = json.loads(resources.files("upcoach.security").joinpath("data/pii_labels.json").read_text("utf-8"))
    grouped: dict[tuple[str, str, bool], list[str]] = {}
    for kind, lang, numbered, label in data["labels"]:
        grouped.setdefault((kind, numbered, lang in UNSPACED), []).append(label)
    # (?![\w-]): "PIN-Code" must reach the "pin-?code" label instead of stopping at "PIN". Without spaces between
    # words there are no word edges to anchor on.
    rules = tuple(
        _Rule(
            kind,
            re.compile(rf"(?i)(?:{'|'.join(labels)})" if unspaced else rf"(?i)(?<!\w)(?:{'|'.join(labels)})(?![\w-])"),
            tuple(re.compile(rf"(?i)(?:{label})" + ("" if unspaced else r"(?![\w-])")) for label in labels),
            numbered == "plain",
            unspaced,
        )
        for (kind, numbered, unspaced), labels in grouped.items()
    )
    copulas = sorted({word for words in data["copulas"].values() for word in words}, key=len, reverse=True)
    # A short phrase may stand between label and separator ("patient ID at the clinic is"); copulas are matched in
    # lower case only, so a value that starts like one ("ES-55219") is not mistaken for "es".
    phrase = "|".join(map(re.escape, data["phrase_words"]))
    copula = f"(?:{'|'.join(map(re.escape, copulas))})(?!\\w)"
    gap = re.compile(
        rf"(?P<phrase>[ \t]+(?i:{phrase})(?:[ \t]+(?!{copula})[^\W\d]+){{1,2}}(?=[ \t]*(?:{copula}|[:=#])))?"
        rf"[ \t]*(?:(?P<copula>{copula})[ \t]*)?(?P<mark>[:=#]|=>)?[ \t]*"
    )
    return rules, gap, frozenset(data["not_values"])


def find_labelled(text: str) -> Iterator[tuple[str, int, int]]:
    """``(type, start, end)`` of each value that follows one of its labels in ``text``."""
    rules, gap_pattern, not_values = _table()
    for rule in rules:
        for label in rule.pattern.finditer(text):
            label_end = rule.label_end(label.start(), text)
            gap = gap_pattern.match(text, label_end)
            assert gap is not None  # every part of the gap is optional
            marked = gap.group("mark") is not None
            separated = marked or gap.group("copula") is not None
            if (rule.needs_separator or gap.group("phrase")) and not separated:
                continue
            if not separated and gap.end() == label_end and not rule.glued:
                continue  # the value must not be glued to its label
            start = _QUOTE.match(text, gap.end()).end()  # type: ignore[union-attr]
            end = _value_end(rule.type, text, start, marked, not_values)
            if end is not None:
                yield rule.type, start, end


def _value_end(kind: str, text: str, start: int, marked: bool, not_values: frozenset[str]) -> int | None:
    shape, min_digits = _SHAPE_OF[kind]
    if shape == "id":
        return _grouped(text, start, _ID_TOKEN, min_digits, 4, 34)
    if shape == "plate":
        return _grouped(text, start, _PLATE_TOKEN, min_digits, 4, 10, needs_letter=True)
    if shape == "pin":
        m = _PIN.match(text, start)
        return m.end() if m else None
    if shape == "answer":
        return _answer(text, start, marked, not_values)
    m = (_SECRET if shape == "secret" else _LOGIN).match(text, start)
    if m is None or len(m.group()) < (3 if shape == "secret" else 2) or m.group().lower() in not_values:
        return None
    if not marked and not _MADE_UP.search(m.group()):
        return None  # "my password is sunshine" reads like prose: only a value that looks made up counts
    return m.end()


def _grouped(
    text: str, start: int, token: re.Pattern[str], min_digits: int, shortest: int, longest: int, *,
    needs_letter: bool = False,
) -> int | None:  # fmt: skip
    """A value of one or more tokens ("12 345 678 901", "AB12 CDE"): later tokens only while they hold a digit
    (or, for plates, are upper-case groups of two or more)."""
    m = token.match(text, start)
    if m is None:
        return None
    end, value = m.end(), m.group()
    for _ in range(5):
        nxt = token.match(text, end + 1) if text[end : end + 1] == " " else None
        if nxt is None or not (any(ch.isdigit() for ch in nxt.group()) or (needs_letter and len(nxt.group()) > 1)):
            break
        end, value = nxt.end(), value + nxt.group()
    alnum = [ch for ch in value if ch.isalnum()]
    digits = sum(ch.isdigit() for ch in alnum)
    if not shortest <= len(alnum) <= longest or digits < max(min_digits, 1):
        return None
    if needs_letter and digits == len(alnum):
        return None
    return end


def _answer(text: str, start: int, marked: bool, not_values: frozenset[str]) -> int | None:
    """One to three words; after a copula alone they must be capitalised (a name, "Smith", "Rex")."""
    end = None
    pos = start
    for _ in range(3):
        m = _WORD.match(text, pos)
        if m is None or m.group().lower() in not_values or not (marked or m.group()[0].isupper()):
            break
        end = m.end()
        if text[end : end + 1] != " ":
            break
        pos = end + 1
    return end
