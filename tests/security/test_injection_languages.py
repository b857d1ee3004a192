"""Injection rules as data: the file's schema, and equal protection in every language (issue 21)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.security.injection_languages_eval import scores
from upcoach.language import LANGUAGES
from upcoach.security.injection import InjectionDetector
from upcoach.security.injection_rules import FAMILIES, RULES, load_rule_tables, parse_rule_tables


def shipped() -> dict[str, Any]:
    return load_rule_tables()


@pytest.fixture(scope="module")
def detector() -> InjectionDetector:
    return InjectionDetector()


@pytest.mark.parametrize("split", ["dev", "held"])
def test_every_language_is_protected(detector: InjectionDetector, split: str) -> None:
    by_lang = scores(detector, split)
    assert {"nl", "pl", "tr", "ar", "hi", "ja"} <= set(by_lang) <= set(LANGUAGES)
    for lang, (n, found, _blocked, ok, fp) in by_lang.items():
        assert found / n >= 0.9, lang
        if lang not in ("en", "de", "fr", "es", "it", "pt"):  # the six first have two coaching lines each
            assert fp == 0, lang
        assert ok


def test_every_language_is_a_table_and_no_language_is_code() -> None:
    tables = shipped()
    assert set(tables) == {"shared", *LANGUAGES}
    rows = sum(len(table["rules"]) for table in tables.values())
    assert len(parse_rule_tables(tables)) == len(RULES) == rows
    assert {rule.name for rule in RULES} == FAMILIES


def test_a_shared_template_takes_every_languages_words() -> None:
    """A language joins the cross-language rules by listing its words: no rule of its own needed."""
    tables = shipped()
    probe = "zorp your quxx"  # "reveal your system prompt" in an invented vocabulary (no "l": rules match skeletons)
    assert not any(rule.pattern.search(probe) for rule in RULES)
    tables["nl"].setdefault("vocabulary", {})["reveal"] = ["zorp"]
    tables["nl"]["vocabulary"]["system_prompt"] = ["quxx"]
    names = {rule.name for rule in parse_rule_tables(tables) if rule.pattern.search(probe)}
    assert "reveal_prompt" in names


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: d.update(xx=d["nl"]), "tables must be"),
        (lambda d: d.pop("shared"), "tables must be"),
        (lambda d: d["nl"].update(language="pl"), "must have language"),
        (lambda d: d["nl"]["rules"][0].update(name="be_evil"), "unknown rule name"),
        (lambda d: d["nl"]["rules"][0].update(weight=0.9), "weight"),
        (lambda d: d["ja"]["rules"][0].update(pattern="(unclosed"), "does not compile"),
        (lambda d: d["tr"]["rules"][0].pop("pattern"), "exactly name, weight and pattern"),
        (lambda d: d["pl"].update(rules=[]), "non-empty"),
        (lambda d: d["de"]["vocabulary"].update(ignore=[]), "non-empty list"),
        (lambda d: d["de"]["rules"][0].update(pattern="{{no_such_slot}} x"), "no words for slot"),
        (lambda d: d["shared"]["rules"][0].update(pattern="{{no_such_slot}} x"), "no words for slot"),
    ],
)
def test_malformed_rules_are_refused(breakage: Any, message: str) -> None:
    data = copy.deepcopy(shipped())
    breakage(data)
    with pytest.raises(ValueError, match=message):
        parse_rule_tables(data)
