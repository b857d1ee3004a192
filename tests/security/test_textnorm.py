"""The one normaliser every detector reads through: invisible characters, soft hyphens, look-alike letters and
full-width forms inserted anywhere inside a sensitive word or value must not hide it from any detector."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upcoach.privacy.special_category import detect_special_categories
from upcoach.security.pii import Redactor, detect
from upcoach.security.textnorm import _HOMOGLYPHS, clean, view

# Characters that render as nothing (or nearly): zero-width space/joiners, word joiner, BOM, soft hyphen, bidi
# marks, a variation selector, a tag character, an interlinear annotation anchor and a NUL.
INVISIBLES = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u202e", "\ufe0f",
              "\U000e0041", "\ufff9", "\x00"]  # fmt: skip
_LOOKALIKE_OF: dict[str, list[str]] = {}
for _glyph, _latin in _HOMOGLYPHS.items():
    if _latin.isalpha():
        _LOOKALIKE_OF.setdefault(_latin, []).append(_glyph)


def _fullwidth(ch: str) -> str:
    return chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch


@st.composite
def disguised(draw: st.DrawFn, word: str) -> str:
    """``word`` with, at random places, invisible characters inserted and letters swapped for look-alikes."""
    out = []
    for ch in word:
        choice = draw(st.sampled_from(["keep", "keep", "lookalike", "fullwidth"]))
        if choice == "lookalike" and _LOOKALIKE_OF.get(ch):
            ch = draw(st.sampled_from(_LOOKALIKE_OF[ch]))
        elif choice == "fullwidth":
            ch = _fullwidth(ch)
        out.append(ch)
        out.append(draw(st.sampled_from(["", "", *INVISIBLES])))
    return "".join(out)


SPECIAL = [
    ("HIV", "health", "I tested positive for {} last month, how do I tell my team?"),
    ("sertraline", "medication", "I started {} and feel foggy at work."),
    ("depression", "mental_health", "My {} is back and I cannot focus."),
    ("pregnant", "pregnancy", "I am {} and worried about my promotion."),
    ("lesbian", "sexual_orientation", "I'm a {} and not out at work."),
    ("synagogue", "religion", "I go to the {} on Saturdays."),
    ("diabetes", "health", "Meine Diabetes? No: my {} makes long meetings hard."),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_special_category_words_are_found_however_they_are_disguised(data: st.DataObject) -> None:
    word, category, template = data.draw(st.sampled_from(SPECIAL))
    text = template.format(data.draw(disguised(word)))
    assert category in detect_special_categories(text).categories, repr(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_self_harm_is_found_however_it_is_disguised(data: st.DataObject) -> None:
    text = f"Honestly I want to {data.draw(disguised('kill'))} {data.draw(disguised('myself'))}."
    assert detect_special_categories(text).self_harm, repr(text)


VALUES = [
    ("EMAIL", "Write to {} about the plan.", "jane.doe@example.com"),
    ("PHONE", "Call me on {} after six.", "+44 20 7946 0958"),
    ("IBAN", "My salary goes to {} every month.", "DE89 3704 0044 0532 0130 00"),
    ("CARD", "I paid with {} yesterday.", "4111 1111 1111 1111"),
    ("NATIONAL_ID", "My SSN is {} on the form.", "123-45-6789"),
    ("PASSPORT", "My passport number is {} for the visa.", "X1234567"),
    ("BANK_ACCOUNT", "Pay into account {} please.", "12345678"),
    ("PASSWORD", "wifi password: {} for the room.", "Sunflower2024"),
]


LABELLED = [
    ("PASSPORT", "passport number", "X1234567"),
    ("CUSTOMER_ID", "Kundennummer", "10045832"),
    ("PASSWORD", "mot de passe", "Soleil2023"),
    ("LICENSE_PLATE", "licence plate", "AB12 CDE"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_labels_are_found_however_label_and_value_are_disguised(data: st.DataObject) -> None:
    kind, label, value = data.draw(st.sampled_from(LABELLED))
    text = f"My {data.draw(disguised(label))}: {data.draw(disguised(value))}, just so you know."
    assert kind in {e.type for e in detect(text)}, repr(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_personal_values_are_found_and_redacted_exactly_however_they_are_disguised(data: st.DataObject) -> None:
    kind, template, value = data.draw(st.sampled_from(VALUES))
    hidden = data.draw(disguised(value))
    text = template.format(hidden)
    # The whole value is one finding, from its first to its last visible character as the user wrote them.
    core = hidden.strip("".join(INVISIBLES))
    start = text.index(core)
    assert any(e.type == kind and e.start <= start and start + len(core) <= e.end for e in detect(text)), repr(text)
    redactor = Redactor()
    redacted = redactor.redact(text)
    assert clean(value) not in clean(redacted)
    assert redactor.rehydrate(redacted) == text


def test_view_maps_every_character_back_to_what_the_user_wrote() -> None:
    text = "Ｍａｉｌ ja\u200bne@exa\u00admple.com — Sаrah"
    normal = view(text)
    assert normal.text == "Mail jane@example.com — Sarah"
    start = normal.text.index("jane")
    assert normal.span(start, start + len("jane@example.com")) == (5, 5 + len("ja\u200bne@exa\u00admple.com"))
    assert normal.original[slice(*normal.span(len(normal.text) - 5, len(normal.text)))] == "Sаrah"
    plain = view("nothing to change here")
    assert plain.text == "nothing to change here" and plain.span(3, 7) == (3, 7)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_view_spans_are_monotonic_and_inside_the_original(text: str) -> None:
    normal = view(text)
    previous = (0, 0)
    for i in range(len(normal.text)):
        start, end = normal.span(i, i + 1)
        assert 0 <= start < end <= len(text) and start >= previous[0]
        previous = (start, end)


def test_non_latin_scripts_are_left_alone_in_what_is_sent() -> None:
    # Detectors read look-alikes as Latin; the redacted text keeps the user's own script everywhere else.
    text = "Мой менеджер сказал: напиши на jane@example.com"
    assert Redactor().redact(text) == "Мой менеджер сказал: напиши на [EMAIL_1]"
