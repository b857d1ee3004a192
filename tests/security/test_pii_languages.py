"""PII in the languages of issue 21: national identifiers through python-stdnum, labels as data, equal recall."""

from __future__ import annotations

import pytest

from tests.security.pii_languages_eval import scores
from upcoach.security.pii import detect


@pytest.mark.parametrize("split", ["dev", "held"])
def test_every_new_language_meets_the_recall_goal(split: str) -> None:
    by_lang = scores(split)
    assert set(by_lang) == {"nl", "pl", "tr", "ar", "hi", "ja"}
    for lang, (values, found, predicted, correct) in by_lang.items():
        assert found / values >= 0.95, lang
        assert correct / predicted >= 0.8, lang


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Mój PESEL: 44051401359.", "44051401359"),
        ("TC kimlik no 10000000146", "10000000146"),
        ("マイナンバーは987654321018です。", "987654321018"),
        ("मेरा आधार 2345 6789 0124 है।", "2345 6789 0124"),
    ],
)
def test_national_identifiers_are_hidden(text: str, value: str) -> None:
    assert any(e.type == "NATIONAL_ID" and value in text[e.start : e.end] for e in detect(text))


def test_numbers_that_fail_the_check_digits_are_not_national_ids() -> None:
    for text in ("Zamówienie 44051401358 dotarło.", "Sipariş no 10000000147", "注文番号は987654321019です。"):
        assert not any(e.type == "NATIONAL_ID" for e in detect(text)), text


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Hasło: Zima2024! nie działa", "PASSWORD", "Zima2024"),
        ("ŞİFRE: Kedi1234", "PASSWORD", "Kedi1234"),  # dotted capital İ
        ("كلمة المرور: Qwe!2024", "PASSWORD", "Qwe!2024"),
        ("पासवर्ड Mango@123 है", "PASSWORD", "Mango@123"),
        ("パスワード：Sakura2024", "PASSWORD", "Sakura2024"),
        ("パスポート番号はTK1234567", "PASSPORT", "TK1234567"),
    ],
)
def test_labelled_values_in_every_script(text: str, kind: str, value: str) -> None:
    found = [(e.type, text[e.start : e.end]) for e in detect(text)]
    assert any(t == kind and value in v for t, v in found), found
