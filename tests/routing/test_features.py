from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from upcoach.llm.base import ChatMessage
from upcoach.routing.features import count_asks, detect_language, extract, parse_tables


def user(text: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage("system", "You are a coach."), ChatMessage("user", text))


SIMPLE = [
    "How do I drink more water?",
    "Any tips for falling asleep faster?",
    "I feel tired today.",
    "What is a good morning habit?",
]
COMPLEX = [
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each for a new team lead, "
    "and then build me a 12-week plan with weekly milestones to apply the best one.",
    "Analyze my current routine step by step: I wake at 6, commute 90 minutes, work 10 hours, and skip the gym. "
    "What are the root causes of my low energy? Also propose a detailed 4-week schedule to fix it.",
    "Vergleiche bitte die Methoden Pomodoro und Timeboxing und erstelle einen detaillierten Wochenplan "
    "für meine Prüfungsvorbereitung mit Meilensteinen.",
]


@pytest.mark.parametrize("text", SIMPLE)
def test_simple_requests_score_low(text: str) -> None:
    assert extract(user(text)).complexity < 0.3


@pytest.mark.parametrize("text", COMPLEX)
def test_complex_requests_score_high(text: str) -> None:
    features = extract(user(text))
    assert features.complexity >= 0.5, features


def test_signals_are_named_for_reasons() -> None:
    features = extract(user(COMPLEX[0]))
    assert "compares options" in features.signals and "multi-step plan" in features.signals
    assert "compares options" in features.explain()


def test_conversation_depth_and_code_raise_complexity() -> None:
    shallow = extract(user("Can you fix this?"))
    deep = extract(
        tuple(ChatMessage("user" if i % 2 == 0 else "assistant", f"turn {i} about my goals") for i in range(17))
        + (ChatMessage("user", "Can you fix this?\n```python\ndef f(x):\n    return x\n```"),)
    )
    assert deep.has_code and deep.user_turns == 10
    assert deep.complexity > shallow.complexity + 0.3


def test_language_detection() -> None:
    assert detect_language("How do I stop procrastinating at work?") == "en"
    assert detect_language("Wie kann ich mich besser konzentrieren und nicht ständig abgelenkt sein?") == "de"
    assert detect_language("Comment est-ce que je peux mieux dormir pendant la semaine?") == "fr"
    assert detect_language("¿Cómo puedo dejar de procrastinar en el trabajo y ser más productivo?") == "es"
    assert detect_language("") == "en"


def test_count_asks() -> None:
    assert count_asks("How do I drink more water?") == 1
    assert count_asks("How do I sleep better? And how do I wake up earlier? What should I eat at night?") == 3
    assert count_asks("- plan my week properly\n- review my goals today\n- suggest three new habits") == 3


# --- the size and structure of the answer, in every supported language (issue 20) ----------------------------------

GENERATION_HEAVY = [
    "Write an 8-session curriculum with objectives, exercises and homework.",
    "Make me a week-by-week schedule in a table.",
    "Give me a 12-week marathon training plan.",
    "Draft a 600-word speech for our team offsite.",
    "Schreibe ein Curriculum mit 8 Sitzungen, mit Lernzielen, Übungen und Hausaufgaben.",
    "Mach mir einen Wochenplan als Tabelle für die nächsten 4 Wochen.",
    "Écris un programme de 8 séances avec objectifs, exercices et devoirs.",
    "Fais-moi un planning semaine par semaine sous forme de tableau.",
    "Escribe un programa de 8 sesiones con objetivos, ejercicios y tareas.",
    "Hazme un calendario semana a semana en una tabla.",
    "Scrivi un programma di 8 incontri con obiettivi, esercizi e compiti.",
    "Fammi un calendario settimana per settimana in una tabella.",
    "Escreve um programa de 8 sessões com objetivos, exercícios e trabalhos.",
    "Faz-me um calendário semana a semana numa tabela.",
    "Maak een trainingsschema van 12 weken in een tabel.",
    "Przygotuj 8-tygodniowy plan treningowy w tabeli.",
    "12 haftalık bir antrenman programı hazırla, tablo halinde.",
    "اكتب خطة تدريب لمدة 12 أسبوعا في جدول.",
    "12 हफ़्ते की ट्रेनिंग योजना तालिका में बनाओ।",
    "12週間のトレーニング計画を表で作ってください。",
]


@pytest.mark.parametrize("text", GENERATION_HEAVY)
def test_generation_heavy_single_asks_score_as_complex(text: str) -> None:
    features = extract(user(text))
    assert features.asks == 1 and features.complexity >= 0.5, features


BRIEF = [
    "Write a two-sentence thank-you note to my mentor.",
    "Give me a quick tip for a calmer evening.",
    "Suggest a name for my morning routine.",
    "Gib mir einen kurzen Spruch für heute.",
    "Donne-moi une phrase de motivation.",
    "Dame una frase corta para motivarme.",
    "Dammi una frase motivazionale per oggi.",
    "Dá-me uma dica rápida para dormir melhor.",
    "Geef me een korte tip voor een rustige avond.",
    "Daj mi krótką radę na spokojny wieczór.",
    "Sakin bir akşam için kısa bir ipucu ver.",
    "أعطني نصيحة قصيرة لمساء هادئ.",
    "शांत शाम के लिए एक छोटा सा सुझाव दो।",
    "落ち着いた夜のために一言でアドバイスをください。",
]


@pytest.mark.parametrize("text", BRIEF)
def test_short_deliverables_stay_simple(text: str) -> None:
    assert extract(user(text)).complexity < 0.3


def test_the_deliverable_is_named_in_the_reasons() -> None:
    features = extract(user(GENERATION_HEAVY[0]))
    assert {"long deliverable", "multi-step plan", "structured output"} <= set(features.signals)
    assert "long deliverable" in features.explain()


def test_languages_that_share_function_words_are_told_apart() -> None:
    assert detect_language("Elabora un plan de desarrollo personal de un año con objetivos.") == "es"
    assert detect_language("Crea un programma di 10 settimane per imparare a parlare in pubblico.") == "it"
    assert detect_language("Cria um plano de treino de 12 semanas com dias de descanso.") == "pt"


def shipped_tables() -> dict[str, Any]:
    return json.loads(resources.files("upcoach.routing").joinpath("data/complexity.json").read_text("utf-8"))


def test_the_shipped_complexity_tables_are_valid() -> None:
    parsed = parse_tables(shipped_tables())
    assert {name for name, _, _ in parsed.signals} >= {"long deliverable", "multi-step plan", "compares options"}


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: d["signals"]["long text"].pop("it"), "languages"),
        (lambda d: d["weights"].pop("long text"), "must name exactly"),
        (lambda d: d["weights"].update({"long text": "heavy"}), "number"),
        (lambda d: d["signals"]["long text"]["en"].append("(unclosed"), "not a valid pattern"),
        (lambda d: d["signals"]["long text"].update(pt=[]), "every language"),
        (lambda d: d.update(languages=["en", "xx"]), "languages must be"),
    ],
)
def test_malformed_complexity_tables_are_refused(breakage: Any, message: str) -> None:
    data = copy.deepcopy(shipped_tables())
    breakage(data)
    with pytest.raises(ValueError, match=message):
        parse_tables(data)
