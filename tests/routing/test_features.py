from __future__ import annotations

import pytest

from upcoach.llm.base import ChatMessage
from upcoach.routing.features import count_asks, detect_language, extract


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
