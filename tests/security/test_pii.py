"""PII detection and reversible redaction: unit tests per type, Redactor contract, properties, evaluation set.

`python -m tests.security.test_pii` prints per-type precision/recall on tests/security/data/pii_eval.txt and the
detection latency quoted in docs/security.md.
"""

from __future__ import annotations

import platform
import random
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import luhn

from upcoach.security import pii
from upcoach.security.pii import Entity, Redactor, detect

EVAL_FILE = Path(__file__).parent / "data" / "pii_eval.txt"
LABELLED_EVAL_FILE = Path(__file__).parent / "data" / "labelled_pii_eval.txt"


def found(text: str) -> set[tuple[str, str]]:
    return {(e.type, e.value) for e in detect(text)}


def kinds(text: str) -> set[str]:
    return {e.type for e in detect(text)}


# --- detectors, one type at a time --------------------------------------------------------------------------------

POSITIVES = [
    ("EMAIL", "Write to jane.doe@example.com today.", "jane.doe@example.com"),
    ("EMAIL", "cc: tom_b+coach@mail.example.co.uk, thanks", "tom_b+coach@mail.example.co.uk"),
    ("PHONE", "Call +44 20 7946 0958 after six.", "+44 20 7946 0958"),
    ("PHONE", "My number is (415) 555-2671.", "(415) 555-2671"),
    ("PHONE", "Ruf an: 030 12345678", "030 12345678"),
    ("PHONE", "Mon numéro est le 06 12 34 56 78.", "06 12 34 56 78"),
    ("PHONE", "Text +91 98765 43210 please", "+91 98765 43210"),
    ("CARD", "Card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
    ("CARD", "Amex 378282246310005.", "378282246310005"),
    ("CARD", "paid with 5555-5555-5555-4444 yesterday", "5555-5555-5555-4444"),
    ("IBAN", "IBAN DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "to GB82WEST12345698765432.", "GB82WEST12345698765432"),
    ("NATIONAL_ID", "SSN 123-45-6789 on the form", "123-45-6789"),
    ("NATIONAL_ID", "my ssn is 123456789", "123456789"),
    ("NATIONAL_ID", "NI number AB 12 34 56 C", "AB 12 34 56 C"),
    ("NATIONAL_ID", "Steuer-ID: 12 345 678 901", "12 345 678 901"),
    ("NATIONAL_ID", "NIR 2 55 08 14 168 025 38", "2 55 08 14 168 025 38"),
    ("NATIONAL_ID", "DNI 12345678Z", "12345678Z"),
    ("NATIONAL_ID", "NIE X1234567L", "X1234567L"),
    ("NATIONAL_ID", "codice fiscale RSSMRA85T10A562S", "RSSMRA85T10A562S"),
    ("NATIONAL_ID", "mijn BSN is 111222333", "111222333"),
    ("NATIONAL_ID", "Aadhaar 2345 6789 0124", "2345 6789 0124"),
    ("IP", "from 192.168.1.20.", "192.168.1.20"),
    ("IP", "host 2001:db8::8a2e:370:7334 again", "2001:db8::8a2e:370:7334"),
    ("ADDRESS", "I live at 221B Baker Street, London NW1 6XE.", "221B Baker Street, London NW1 6XE"),
    ("ADDRESS", "Ich wohne Hauptstraße 5, 10115 Berlin.", "Hauptstraße 5, 10115 Berlin"),
    ("ADDRESS", "J'habite 12 rue de la Paix, 75002 Paris.", "12 rue de la Paix, 75002 Paris"),
    ("ADDRESS", "Vivo en Calle Mayor 3.", "Calle Mayor 3"),
    ("ADDRESS", "Abito in Via Roma 10.", "Via Roma 10"),
    ("ADDRESS", "Moro na Rua Augusta 100.", "Rua Augusta 100"),
    ("ADDRESS", "Mijn adres is Prinsengracht 263.", "Prinsengracht 263"),
    ("DOB", "I was born on 3 March 1990.", "3 March 1990"),
    ("DOB", "DOB: 1990-03-03", "1990-03-03"),
    ("DOB", "geboren am 03.03.1990", "03.03.1990"),
    ("DOB", "Je suis né le 3 mars 1990.", "3 mars 1990"),
    ("DOB", "nacido el 3 de marzo de 1990", "3 de marzo de 1990"),
    ("DOB", "nato il 3 marzo 1990", "3 marzo 1990"),
    ("DOB", "nascido em 3 de março de 1990", "3 de março de 1990"),
    ("DOB", "My date of birth is 03/03/1990.", "03/03/1990"),
    ("PERSON", "My manager Tom keeps interrupting.", "Tom"),
    ("PERSON", "Anna Schmidt took credit for my work.", "Anna Schmidt"),
    ("PERSON", "Ask Dr. Okafor about it.", "Okafor"),
    ("PERSON", "Mein Chef Jürgen ruft ständig an.", "Jürgen"),
    ("PERSON", "I asked Will to cover my shift.", "Will"),
    ("PERSON", "Will Harper is my accountability partner.", "Will Harper"),
    ("PERSON", "She is named Xiomara.", "Xiomara"),
    ("PERSON", "Ana de la Cruz leads the team.", "Ana de la Cruz"),
    (
        "URL_TOKEN",
        "Reset: https://app.example.com/reset?token=abc123&u=5 now",
        "https://app.example.com/reset?token=abc123&u=5",
    ),
    (
        "URL_TOKEN",
        "see https://x.example.org/cb#access_token=eyJabc.def",
        "https://x.example.org/cb#access_token=eyJabc.def",
    ),
    ("URL_TOKEN", "old http://me:hunter22@intranet.local/x", "http://me:hunter22@intranet.local/x"),
    ("SECRET", "key AKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE"),
    ("SECRET", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 oops", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("SECRET", "xoxb-2048-9981-AbCdEfGhIjKlMnOp in the config", "xoxb-2048-9981-AbCdEfGhIjKlMnOp"),
    ("SECRET", "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12 pasted", "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12"),
    ("SECRET", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q in the app", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    (
        "SECRET",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcDEF123_-x ok",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcDEF123_-x",
    ),
    ("PASSWORD", "my password is hunter2.", "hunter2"),
    ("SECRET", "api_key=a8f5f167f44f4964e6c998dee827110c", "a8f5f167f44f4964e6c998dee827110c"),
    ("PASSWORD", "mein Passwort ist Sonne123", "Sonne123"),
    # Values introduced by their label (security/labels.py), in each supported language.
    ("PASSPORT", "My passport number is X1234567.", "X1234567"),
    ("PASSPORT", "Meine Reisepassnummer lautet C01X00T47.", "C01X00T47"),
    ("DRIVER_LICENSE", "driving licence no. MORGA753116SM9IJ", "MORGA753116SM9IJ"),
    ("BANK_ACCOUNT", "account 12345678 routing 021000021", "12345678"),
    ("ROUTING_NUMBER", "account 12345678 routing 021000021", "021000021"),
    ("ROUTING_NUMBER", "sort code 20-00-00", "20-00-00"),
    ("EMPLOYEE_ID", "Mi número de empleado es 73921.", "73921"),
    ("MEMBER_ID", "Mitgliedsnummer: 884213", "884213"),
    ("CUSTOMER_ID", "numéro client 884213", "884213"),
    ("POLICY_NUMBER", "Numero di polizza PL77812345 per la casa.", "PL77812345"),
    ("PATIENT_ID", "Número de utente 123456789 no centro de saúde.", "123456789"),
    ("TAX_ID", "Steuernummer 143/815/08150", "143/815/08150"),
    ("NATIONAL_ID", "Ausweisnummer L01X00T47", "L01X00T47"),
    ("LICENSE_PLATE", "Mijn kenteken is 12-ABC-3.", "12-ABC-3"),
    ("LICENSE_PLATE", "my licence plate is AB12 CDE and I got a fine", "AB12 CDE"),
    ("PASSWORD", "Mot de passe : Soleil2023", "Soleil2023"),
    ("PIN", "PIN-Code: 0815", "0815"),
    ("USERNAME", "Benutzername: mmueller", "mmueller"),
    ("SECURITY_ANSWER", "My mother's maiden name is Fitzgerald.", "Fitzgerald"),
]


@pytest.mark.parametrize(
    ("kind", "text", "value"), POSITIVES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(POSITIVES)]
)
def test_detects(kind: str, text: str, value: str) -> None:
    assert (kind, value) in found(text)


NEGATIVES = [
    ("CARD", "Card 4111 1111 1111 1112 was declined"),  # Luhn fails
    ("CARD", "Order 1234567890123 shipped"),  # Luhn fails
    ("CARD", "IBAN DE89 3704 0044 0532 0130 01"),  # digits of a mistyped IBAN
    ("IBAN", "IBAN DE89 3704 0044 0532 0130 01"),  # mod-97 fails
    ("IBAN", "GB82WEST12345698765433"),
    ("IBAN", "Model XY12 3456 7890 1234 is out"),  # unknown country
    ("NATIONAL_ID", "SSN 666-45-6789"),  # area 666 is never issued
    ("NATIONAL_ID", "SSN 123-00-6789"),
    ("NATIONAL_ID", "DNI 12345678A"),  # wrong check letter
    ("NATIONAL_ID", "my BSN is 111222334"),  # fails the 11-proof
    ("NATIONAL_ID", "ticket 123456789 closed"),  # 9 digits, no context
    ("NATIONAL_ID", "Aadhaar 2345 6789 0123"),  # Verhoeff fails
    ("NATIONAL_ID", "codice RSSMRA85T10A562T"),  # wrong check character
    ("IP", "version 1.2.300.4 is out"),
    ("IP", "meeting at 10:30:00"),
    ("PHONE", "meeting on 03.03.1990"),
    ("PHONE", "I walked 10000 steps"),
    ("DOB", "We launched on 3 March 2021."),
    ("DOB", "The workshop is on 2024-09-15."),
    ("URL_TOKEN", "see https://example.com/blog?page=2&utm_source=x"),
    ("SECRET", "The secret is consistency."),
    ("SECRET", "Here's the secret: start small."),
    ("PASSWORD", "My password is too weak."),
    ("SECRET", "Can I get an API key for the app?"),
    # Coaching talk with numbers or label words is not personal data.
    ("PASSWORD", "Password reset emails stress me out."),
    ("PASSWORD", "My password is longer than yours."),
    ("BANK_ACCOUNT", "Let me give you my account of what happened."),
    ("BANK_ACCOUNT", "My account has 2 factor authentication now."),
    ("CUSTOMER_ID", "The customer number one priority is speed."),
    ("LICENSE_PLATE", "The plate was empty by 8 pm."),
    ("PIN", "PIN-Eingabe am Automaten macht mich nervös."),
    ("ADDRESS", "I walk 3 miles every day along the river."),
    ("ADDRESS", "I sent it via Slack 2 times."),
    ("PERSON", "May I ask how to plan my week?"),
    ("PERSON", "I want to run a half marathon in May."),
    ("PERSON", "Will it help to wake up earlier?"),
    ("PERSON", "Mark the date in your calendar."),
    ("PERSON", "Grace under pressure is a skill."),
    ("PERSON", "San Francisco was too expensive."),
    ("PERSON", "I'm fasting for Ramadan this month."),
    ("PERSON", "Thanks. Monday is my busiest day."),
    ("PERSON", "i talked to anna yesterday"),  # lower case: not detected (a known gap, documented)
]


@pytest.mark.parametrize(("kind", "text"), NEGATIVES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(NEGATIVES)])
def test_does_not_detect(kind: str, text: str) -> None:
    assert kind not in kinds(text)


def test_entities_are_sorted_non_overlapping_and_longest_wins() -> None:
    text = "Mail anna.schmidt@example.com or visit https://x.example.com/?token=anna.schmidt@example.com now"
    entities = detect(text)
    assert [e.type for e in entities] == ["EMAIL", "URL_TOKEN"]
    assert all(a.end <= b.start for a, b in zip(entities, entities[1:], strict=False))
    assert all(text[e.start : e.end] == e.value for e in entities)


def test_specificity_breaks_ties_on_equal_spans() -> None:
    candidates = [Entity("PHONE", 0, 10, "x" * 10), Entity("DOB", 0, 10, "x" * 10)]
    assert [e.type for e in pii._resolve(candidates)] == ["DOB"]


def test_entity_repr_never_shows_the_value() -> None:
    (entity,) = detect("write to secret.person@example.com")
    assert "secret.person" not in repr(entity)
    assert "EMAIL" in repr(entity)


def test_private_key_block_is_one_secret_even_unterminated() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAKCAQ\n-----END RSA PRIVATE KEY-----"
    assert found(f"key:\n{pem}\nthanks") >= {("SECRET", pem)}
    partial = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk"
    assert ("SECRET", partial) in found(f"oops {partial}")


def test_weak_secret_keys_need_machine_made_values() -> None:
    assert ("SECRET", "q8Zk-12Lp_xx") in found("token: q8Zk-12Lp_xx")
    assert "SECRET" not in kinds("token: appreciation")


# --- Redactor ----------------------------------------------------------------------------------------------------


def test_same_value_same_placeholder_across_messages() -> None:
    r = Redactor()
    out = r.redact_messages(
        ["My manager Tom is tough.", "Tom emailed tom.b@example.com again.", "Reply to tom.b@example.com?"]
    )
    assert out == [
        "My manager [PERSON_1] is tough.",
        "[PERSON_1] emailed [EMAIL_1] again.",
        "Reply to [EMAIL_1]?",
    ]
    assert r.counts == {"PERSON": 1, "EMAIL": 1}


def test_a_name_introduced_later_is_redacted_in_earlier_messages() -> None:
    r = Redactor()
    out = r.redact_messages(["Will said no.", "My colleague Will wants the project."])
    assert out == ["[PERSON_1] said no.", "My colleague [PERSON_1] wants the project."]


def test_redact_keeps_numbering_across_calls_and_words_of_names_recur() -> None:
    r = Redactor()
    assert r.redact("Anna Schmidt joined.") == "[PERSON_1] joined."
    assert r.redact("Call +44 20 7946 0958, ask Schmidt.") == "Call [PHONE_1], ask [PERSON_2]."
    assert r.rehydrate("[PERSON_2] and [PERSON_1]") == "Schmidt and Anna Schmidt"


def test_rehydrate_accepted_forms() -> None:
    r = Redactor()
    r.redact("Email anna@example.com")
    assert r.rehydrate("[EMAIL_1]") == "anna@example.com"
    assert r.rehydrate("EMAIL_1, ok") == "anna@example.com, ok"
    assert r.rehydrate("[email_1]") == "anna@example.com"
    assert r.rehydrate("EMAIL\\_1") == "anna@example.com"
    assert r.rehydrate("(EMAIL_1]") == "(anna@example.com"
    assert r.rehydrate("[EMAIL_2] EMAIL_12 XEMAIL_1 email_1") == "[EMAIL_2] EMAIL_12 XEMAIL_1 email_1"


def test_literal_placeholders_in_the_input_survive_a_round_trip() -> None:
    r = Redactor()
    first = r.redact("Anna said hi")
    text = "The template says [PERSON_1] and PERSON_1 literally"
    red = r.redact(text)
    assert first == "[PERSON_1] said hi"
    assert "[PERSON_1]" not in red and r.rehydrate(red) == text
    assert r.counts == {"PERSON": 1}


def test_counts_never_contain_values() -> None:
    r = Redactor()
    r.redact("Anna Schmidt, anna@example.com, 4111 1111 1111 1111")
    assert r.counts == {"PERSON": 1, "EMAIL": 1, "CARD": 1}
    assert all(isinstance(k, str) and k.isupper() and isinstance(v, int) for k, v in r.counts.items())


# --- properties --------------------------------------------------------------------------------------------------

VALID_PHONES = [
    "+44 20 7946 0958",
    "+1 202-555-0143",
    "(415) 555-2671",
    "+49 151 23456789",
    "030 12345678",
    "+33 6 12 34 56 78",
    "06 12 34 56 78",
    "+34 912 345 678",
    "+39 347 123 4567",
    "+351 912 345 678",
    "+31 20 123 4567",
    "+91 98765 43210",
    "+55 11 91234-5678",
]
BENIGN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.!?'\n", max_size=40)


def _luhn_complete(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn.is_valid(body + d))


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from([("4", 16), ("51", 16), ("55", 16), ("34", 15), ("37", 15), ("6011", 16)]))
    middle = draw(st.text(alphabet="0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    digits = _luhn_complete(prefix + middle)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4)) if sep else digits


_BBAN = {"DE": "n18", "GB": "a4n14", "FR": "n23", "ES": "n20", "IT": "a1n22", "NL": "a4n10", "AT": "n16"}


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(_BBAN)))
    bban = ""
    for kind, n in re.findall(r"([an])(\d+)", _BBAN[country]):
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if kind == "a" else "0123456789"
        bban += draw(st.text(alphabet=alphabet, min_size=int(n), max_size=int(n)))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    compact = f"{country}{check:02d}{bban}"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)) if draw(st.booleans()) else compact


EMAILS = st.from_regex(r"[a-z][a-z0-9._]{0,10}[a-z0-9]@[a-z]{2,10}\.(?:com|org|de|co\.uk)", fullmatch=True)
PII_VALUES = st.one_of(EMAILS, st.sampled_from(VALID_PHONES), cards(), ibans())


def test_phone_list_is_valid() -> None:
    regions = ["US", "GB", "DE", "FR", "ES", "IT", "PT", "NL", "IN", "BR"]
    for number in VALID_PHONES:
        assert any(phonenumbers.is_valid_number(phonenumbers.parse(number, r)) for r in regions), number


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(BENIGN, PII_VALUES), min_size=1, max_size=5), BENIGN)
def test_redact_then_rehydrate_restores_text_and_hides_values(parts: list[tuple[str, str]], tail: str) -> None:
    text = "".join(f"{benign} {value} " for benign, value in parts) + tail
    r = Redactor()
    redacted = r.redact(text)
    assert r.rehydrate(redacted) == text
    for _, value in parts:
        assert value not in redacted


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(BENIGN, PII_VALUES), min_size=2, max_size=4))
def test_messages_share_placeholders(parts: list[tuple[str, str]]) -> None:
    messages = [f"{benign} {value} ." for benign, value in parts] + [f"again {parts[0][1]} ."]
    r = Redactor()
    out = r.redact_messages(messages)
    assert [r.rehydrate(m) for m in out] == messages
    first = re.findall(r"\[[A-Z_]+_\d+\]", out[0])
    assert first and first[-1] in out[-1]


PLACEHOLDER_LIKE = st.sampled_from(["[PERSON_1]", "PERSON_1", "[email_1]", "[EMAIL_2", "CARD_1]", "PHONE\\_1", "]"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=30), PLACEHOLDER_LIKE, PII_VALUES), max_size=8))
def test_round_trip_is_exact_for_any_text(chunks: list[str]) -> None:
    r = Redactor()
    texts = ["".join(chunks), " ".join(chunks), "Anna Schmidt " + " ".join(chunks)]
    redacted = r.redact_messages(texts)
    assert [r.rehydrate(t) for t in redacted] == texts


# --- evaluation set ----------------------------------------------------------------------------------------------

_MARK = re.compile(r"\{\{(\w+)\|(.*?)\}\}")


def load_eval(split: str, path: Path = EVAL_FILE) -> list[tuple[str, list[tuple[str, int, int]]]]:
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#") or not line.startswith(f"{split}: "):
            continue
        raw = line.split(": ", 1)[1]
        text, gold, pos = "", [], 0
        for m in _MARK.finditer(raw):
            text += raw[pos : m.start()]
            gold.append((m.group(1), len(text), len(text) + len(m.group(2))))
            text += m.group(2)
            pos = m.end()
        samples.append((text + raw[pos:], gold))
    return samples


def evaluate(split: str, path: Path = EVAL_FILE) -> dict[str, tuple[int, int, int, int]]:
    """Type -> (gold, gold found, predicted, predicted correct); a match is an overlap with the same type."""
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for text, gold in load_eval(split, path):
        predicted = detect(text)
        for kind, s, e in gold:
            stats[kind][0] += 1
            stats[kind][1] += any(p.type == kind and p.start < e and s < p.end for p in predicted)
        for p in predicted:
            stats[p.type][2] += 1
            stats[p.type][3] += any(kind == p.type and p.start < e and s < p.end for kind, s, e in gold)
    return {k: (v[0], v[1], v[2], v[3]) for k, v in stats.items()}


def test_eval_set_is_big_enough_and_half_held_out() -> None:
    dev, held = load_eval("dev"), load_eval("held")
    assert len(dev) + len(held) >= 300 and len(held) >= 150
    labelled_dev, labelled_held = load_eval("dev", LABELLED_EVAL_FILE), load_eval("held", LABELLED_EVAL_FILE)
    assert len(labelled_dev) >= 60 and len(labelled_held) >= 60
    labelled = {kind for _, gold in dev + held + labelled_dev + labelled_held for kind, _, _ in gold}
    assert labelled == set(pii.TYPES)


@pytest.mark.parametrize("path", [EVAL_FILE, LABELLED_EVAL_FILE], ids=["pii", "labelled"])
@pytest.mark.parametrize("split", ["dev", "held"])
def test_eval_set_quality(split: str, path: Path) -> None:
    results = evaluate(split, path)
    for kind, (gold, hit, predicted, correct) in results.items():
        # The labelled set has 2-8 values per type: its recall is held to the total below, not per type.
        assert gold == 0 or hit / gold >= 0.9 or path == LABELLED_EVAL_FILE, (kind, hit, gold)
        assert predicted == 0 or correct / predicted >= 0.8, (kind, correct, predicted)
    gold, hit, predicted, correct = (sum(column) for column in zip(*results.values(), strict=True))
    assert hit / gold >= 0.9 and correct / predicted >= 0.95, (hit, gold, correct, predicted)


def latency_ms(runs: int = 400) -> tuple[float, float]:
    """Median and P95 of detect() on ~300-character coaching messages, each mixing prose and some PII."""
    rng = random.Random(7)
    texts = [t for t, _ in load_eval("dev") + load_eval("held")]
    samples = []
    for _ in range(runs):
        message = ""
        while len(message) < 300:
            message += rng.choice(texts) + " "
        message = message[:300]
        start = time.perf_counter()
        detect(message)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * len(samples)) - 1]


def main() -> None:
    detect("warm-up: load the name list")
    print(
        f"{time.strftime('%Y-%m-%d')} python {platform.python_version()} on {platform.machine()} {platform.processor()}"
    )
    for path, split in (
        (EVAL_FILE, "dev"),
        (EVAL_FILE, "held"),
        (LABELLED_EVAL_FILE, "dev"),
        (LABELLED_EVAL_FILE, "held"),
    ):
        print(f"\n{path.name} {split}: {len(load_eval(split, path))} sentences")
        print("| type | gold | precision | recall |")
        print("| --- | ---: | ---: | ---: |")
        totals = [0, 0, 0, 0]
        results = evaluate(split, path)
        for kind in pii.TYPES:
            gold, hit, predicted, correct = results.get(kind, (0, 0, 0, 0))
            if not gold and not predicted:
                continue
            totals = [a + b for a, b in zip(totals, (gold, hit, predicted, correct), strict=True)]
            precision = f"{correct / predicted:.2f}" if predicted else "n/a"
            recall = f"{hit / gold:.2f}" if gold else "n/a"
            print(f"| {kind} | {gold} | {precision} | {recall} |")
        print(f"| all | {totals[0]} | {totals[3] / totals[2]:.2f} | {totals[1] / totals[0]:.2f} |")
    median, p95 = latency_ms()
    print(f"\ndetect() on 300-character messages: median {median:.2f} ms, P95 {p95:.2f} ms")


if __name__ == "__main__":
    main()
