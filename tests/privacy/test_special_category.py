"""Special-category (GDPR art. 9) and self-harm rules: per category and language, idioms, the evaluation set.

`python -m tests.privacy.test_special_category` prints per-category precision/recall on
tests/privacy/data/special_category_eval.txt and the latency quoted in docs/security.md.
"""

from __future__ import annotations

import copy
import json
import random
import statistics
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from upcoach.privacy.special_category import CATEGORIES, CRISIS_RESOURCES, detect_special_categories, parse_rules

EVAL_FILE = Path(__file__).parent / "data" / "special_category_eval.txt"

CATEGORY_CASES = [
    ("health", "I was diagnosed with type 2 diabetes."),
    ("health", "Ich habe Asthma und kann nicht joggen."),
    ("health", "J'ai une maladie chronique."),
    ("health", "Tengo fibromialgia."),
    ("health", "Ho l'emicrania ogni settimana."),
    ("health", "Tive um AVC."),
    ("health", "My back is killing me."),
    ("health", "I use a wheelchair at work."),
    ("mental_health", "I've been diagnosed with depression."),
    ("mental_health", "Ich habe eine Panikattacke gehabt."),
    ("mental_health", "Je vois un psychiatre."),
    ("mental_health", "Voy al psicólogo cada semana."),
    ("mental_health", "Sono in terapia."),
    ("mental_health", "Estou com depressão."),
    ("mental_health", "My anxiety gets worse before meetings."),
    ("medication", "I take sertraline every morning."),
    ("medication", "Ich nehme Antidepressiva."),
    ("medication", "Je prends des somnifères."),
    ("medication", "Tomo ansiolíticos."),
    ("medication", "Prendo farmaci per dormire."),
    ("medication", "Tomo remédios todos os dias."),
    ("pregnancy", "I'm pregnant and nervous about telling my boss."),
    ("pregnancy", "Ich bin schwanger."),
    ("pregnancy", "Je suis enceinte."),
    ("pregnancy", "Estoy embarazada."),
    ("pregnancy", "Sono incinta."),
    ("pregnancy", "Estou grávida."),
    ("sex_life", "Our sex life is gone since the baby."),
    ("sex_life", "Unser Sexleben leidet."),
    ("sex_life", "Notre vie sexuelle est compliquée."),
    ("sex_life", "Mi vida sexual es un desastre."),
    ("sex_life", "La nostra vita sessuale è un problema."),
    ("sex_life", "Nossa vida sexual acabou."),
    ("sexual_orientation", "I'm gay and not out at work."),
    ("sexual_orientation", "Ich bin lesbisch."),
    ("sexual_orientation", "Je suis homosexuel."),
    ("sexual_orientation", "Soy bisexual."),
    ("sexual_orientation", "Sono omosessuale."),
    ("sexual_orientation", "Sou lésbica."),
    ("religion", "I pray five times a day."),
    ("religion", "Ich bin Muslimin."),
    ("religion", "Je suis catholique."),
    ("religion", "Voy a misa los domingos."),
    ("religion", "Vado in chiesa la domenica."),
    ("religion", "Sou evangélico."),
    ("political_opinion", "I voted for the Greens."),
    ("political_opinion", "Ich habe die SPD gewählt."),
    ("political_opinion", "J'ai voté pour les écologistes."),
    ("political_opinion", "Voté a Podemos."),
    ("political_opinion", "Ho votato per il Partito Democratico."),
    ("political_opinion", "Votei no PT."),
    ("union_membership", "I'm a trade union member."),
    ("union_membership", "Ich bin in der Gewerkschaft."),
    ("union_membership", "Je suis syndiqué."),
    ("union_membership", "Estoy afiliada al sindicato."),
    ("union_membership", "Sono iscritto al sindacato."),
    ("union_membership", "Sou sindicalizado."),
    ("ethnic_origin", "I face racism at work."),
    ("ethnic_origin", "Ich habe einen Migrationshintergrund."),
    ("ethnic_origin", "Je subis du racisme."),
    ("ethnic_origin", "Sufro racismo."),
    ("ethnic_origin", "Subisco razzismo."),
    ("ethnic_origin", "Sofro racismo no trabalho."),
    ("genetic", "My genetic test came back positive."),
    ("genetic", "Mein Gentest war positiv."),
    ("genetic", "Mon test génétique est positif."),
    ("genetic", "Mi prueba genética salió positiva."),
    ("genetic", "Il test genetico è positivo."),
    ("genetic", "O teste genético deu positivo."),
    ("biometric", "The office uses fingerprint scanners."),
    ("biometric", "Wir nutzen Gesichtserkennung."),
    ("biometric", "On utilise la reconnaissance faciale."),
    ("biometric", "Usan reconocimiento facial."),
    ("biometric", "Usiamo il riconoscimento facciale."),
    ("biometric", "Usamos reconhecimento facial."),
]


@pytest.mark.parametrize(("category", "text"), CATEGORY_CASES)
def test_category_fires(category: str, text: str) -> None:
    result = detect_special_categories(text)
    assert category in result.categories, result


SELF_HARM = [
    "I want to kill myself",
    "Sometimes I want to end it all.",
    "I see no reason to live.",
    "I keep wanting to hurt myself.",
    "Everyone would be better off without me.",
    "I don't want to wake up tomorrow.",
    "I've been thinking about suicide.",
    "Ich will nicht mehr leben.",
    "Ich denke daran, mich umzubringen.",
    "Je veux mourir.",
    "J'ai envie de me suicider.",
    "Quiero morir.",
    "No quiero seguir viviendo.",
    "Voglio morire.",
    "Penso di farla finita.",
    "Quero morrer.",
    "Estou a pensar em me matar.",
]


@pytest.mark.parametrize("text", SELF_HARM)
def test_self_harm_fires_and_is_mental_health(text: str) -> None:
    result = detect_special_categories(text)
    assert result.self_harm and "mental_health" in result.categories, result


NOT_SELF_HARM = [
    "This deadline is killing me.",
    "I could kill for a coffee.",
    "How do I kill the process that hangs?",
    "My back is killing me.",
    "I'm killing myself trying to hit this deadline.",
    "I hurt myself at the gym yesterday.",
    "I cut myself some slack this week.",
    "That pitch was career suicide.",
    "I'm dying to try the new app.",
    "I want to take my life back from work.",
    "I don't want to live in London anymore.",
    "Diese Deadline bringt mich um.",
    "Ce projet me tue.",
    "Este trabajo me está matando.",
    "Questo traffico mi uccide.",
    "Este prazo está me matando.",
    "Voglio farla finita con questo progetto.",
]


@pytest.mark.parametrize("text", NOT_SELF_HARM)
def test_idioms_are_not_self_harm(text: str) -> None:
    assert not detect_special_categories(text).self_harm


WELLNESS = [
    "I want to sleep better.",
    "I want to drink more water.",
    "How do I get fitter?",
    "I want to lose a few kilos before summer.",
    "I'm anxious about my presentation tomorrow.",
    "I'm stressed about my review.",
    "I feel tired and unmotivated.",
    "Office politics drain me.",
    "Thank God it's Friday.",
    "We voted on the new logo.",
    "The union of our two teams went badly.",
    "I feel burned out by this workload.",
    "I'm going on maternity leave in June.",
    "Our company's DNA is customer focus.",
    "I have a blind spot when it comes to feedback.",
    "I'm a chronic procrastinator.",
    "Ich will besser schlafen.",
    "Je veux boire plus d'eau.",
    "Quiero ponerme en forma.",
    "Voglio dormire meglio.",
    "Quero dormir melhor.",
]


@pytest.mark.parametrize("text", WELLNESS)
def test_wellness_coaching_stays_routable(text: str) -> None:
    result = detect_special_categories(text)
    assert result.categories == () and not result.self_harm, result


def test_result_reports_rule_names_not_words() -> None:
    result = detect_special_categories("I take sertraline for my depression and I want to kill myself")
    assert result.categories == ("mental_health", "medication")
    assert {"self_harm.en", "mental_health.en", "medication.en"} <= set(result.matches)
    assert all(m.split(".")[0] in (*CATEGORIES, "self_harm", "clinical") for m in result.matches)
    assert not any("sertraline" in m or "depression" in m for m in result.matches)


def test_accents_and_case_do_not_matter() -> None:
    assert detect_special_categories("ESTOU COM DEPRESSAO").categories == ("mental_health",)
    assert detect_special_categories("Estou com depressão").categories == ("mental_health",)


def test_a_diagnosis_word_alone_counts_as_health_but_defers_to_precise_categories() -> None:
    assert detect_special_categories("My doctor wants more tests.").categories == ("health",)
    assert detect_special_categories("My doctor prescribed antidepressants.").categories == ("medication",)


def test_crisis_resources_name_real_lines() -> None:
    for number in ("112", "911", "988", "116 123", "0800 111 0 111", "3114", "024", "findahelpline.com"):
        assert number in CRISIS_RESOURCES


def shipped_tables() -> dict[str, Any]:
    return json.loads(resources.files("upcoach.privacy").joinpath("data/special_category.json").read_text("utf-8"))


def test_the_shipped_rule_tables_are_valid_and_cover_every_language() -> None:
    parsed = parse_rules(shipped_tables())
    names = {name for name, _, _ in parsed.rules}
    for category in (*CATEGORIES, "self_harm"):
        assert {f"{category}.{lang}" for lang in ("en", "de", "fr", "es", "it", "pt")} <= names, category


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: d["categories"]["health"].pop("de"), "languages"),
        (lambda d: d["categories"].pop("genetic"), "must name exactly"),
        (lambda d: d["categories"]["health"]["en"].append("(unclosed"), "not a valid pattern"),
        (lambda d: d["categories"]["religion"]["en"].append("{NOPE}"), "unknown macro"),
        (lambda d: d["categories"]["religion"]["en"].append(""), "non-empty strings"),
        (lambda d: d.update(languages=["en"]), "languages must be"),
    ],
)
def test_malformed_rule_tables_are_refused(breakage: Any, message: str) -> None:
    data = copy.deepcopy(shipped_tables())
    breakage(data)
    with pytest.raises(ValueError, match=message):
        parse_rules(data)


def load_eval(split: str) -> list[tuple[set[str], str]]:
    samples = []
    for line in EVAL_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{split}: "):
            labels, text = line.split(": ", 1)[1].split(" | ", 1)
            samples.append((set() if labels == "-" else set(labels.split(",")), text))
    return samples


def evaluate(split: str) -> dict[str, tuple[int, int, int]]:
    """Label -> (true positives, false positives, false negatives), per sentence."""
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for gold, text in load_eval(split):
        result = detect_special_categories(text)
        predicted = set(result.categories) | ({"self_harm"} if result.self_harm else set())
        for label in gold | predicted:
            stats[label][0 if label in gold and label in predicted else 1 if label in predicted else 2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in stats.items()}


def test_eval_set_is_big_enough_and_half_held_out() -> None:
    dev, held = load_eval("dev"), load_eval("held")
    assert len(dev) + len(held) >= 200 and len(held) >= 100
    labels = {label for gold, _ in dev + held for label in gold}
    assert labels == set(CATEGORIES) | {"self_harm"}
    assert sum(not gold for gold, _ in dev + held) >= 40  # negatives, idioms included


@pytest.mark.parametrize("split", ["dev", "held"])
def test_eval_set_quality(split: str) -> None:
    for label, (tp, fp, fn) in evaluate(split).items():
        assert tp + fn == 0 or tp / (tp + fn) >= 0.9, (label, tp, fn)
        assert tp + fp == 0 or tp / (tp + fp) >= 0.8, (label, tp, fp)
    tp, fp, fn = evaluate(split).get("self_harm", (0, 0, 0))
    assert fp == 0 and tp / (tp + fn) >= 0.9


def main() -> None:
    for split in ("dev", "held"):
        stats = evaluate(split)
        print(f"\n{split}: {len(load_eval(split))} sentences")
        print("| label | gold | precision | recall |")
        print("| --- | ---: | ---: | ---: |")
        for label in (*CATEGORIES, "self_harm"):
            tp, fp, fn = stats.get(label, (0, 0, 0))
            precision = f"{tp / (tp + fp):.2f}" if tp + fp else "n/a"
            print(
                f"| {label} | {tp + fn} | {precision} | {tp / (tp + fn):.2f} |"
                if tp + fn
                else f"| {label} | 0 | - | - |"
            )
        negatives = [text for gold, text in load_eval(split) if not gold]
        flagged = sum(bool(detect_special_categories(t).categories) for t in negatives)
        print(f"negatives (wellness, idioms): {len(negatives)}, flagged {flagged}")
    rng = random.Random(7)
    texts = [text for _, text in load_eval("dev") + load_eval("held")]
    samples = []
    for _ in range(400):
        message = ""
        while len(message) < 300:
            message += rng.choice(texts) + " "
        start = time.perf_counter()
        detect_special_categories(message[:300])
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    print(
        f"\ndetect_special_categories() on 300 characters: median {statistics.median(samples):.2f} ms, "
        f"P95 {samples[int(0.95 * len(samples)) - 1]:.2f} ms"
    )


if __name__ == "__main__":
    main()
