"""Recurring themes in journal entries: a hand-written keyword lexicon, matched locally on word stems.

A lexicon was chosen over a model because it runs in microseconds, needs no download, is explainable (the matched
words can be shown) and never sends text anywhere. Like the sentiment model it is English only; entries in other
languages simply yield no themes.
"""

from __future__ import annotations

import re

from upcoach.security.textnorm import clean

# theme -> stems; a word matches a stem when it starts with it ("stress" matches stressed, stressful).
THEMES: dict[str, tuple[str, ...]] = {
    "work": ("work", "job", "boss", "manager", "colleague", "coworker", "office", "meeting", "deadline", "project",
             "client", "career", "promotion"),
    "sleep": ("sleep", "slept", "insomnia", "tired", "exhausted", "nap", "bedtime", "woke", "wake"),
    "stress": ("stress", "anxious", "anxiety", "overwhelm", "pressure", "worried", "worry", "panic", "tense",
               "nervous", "burnout"),
    "relationships": ("friend", "partner", "husband", "wife", "boyfriend", "girlfriend", "relationship", "argument",
                      "argued", "lonely", "loneliness"),
    "family": ("family", "mom", "mum", "dad", "mother", "father", "parent", "kid", "child", "son", "daughter",
               "brother", "sister", "grandm", "grandp"),
    "health": ("health", "sick", "doctor", "pain", "headache", "diet", "medic"),
    "exercise": ("exercise", "workout", "gym", "running", "ran", "walk", "yoga", "swim", "cycling", "sport"),
    "goals": ("goal", "plan", "progress", "milestone", "achiev", "target", "habit", "routine", "resolution"),
    "motivation": ("motivat", "procrastinat", "lazy", "energ", "inspired", "stuck"),
    "focus": ("focus", "distract", "concentrat", "productiv", "scroll", "attention"),
    "money": ("money", "budget", "debt", "salary", "rent", "bills", "saving", "spending"),
    "confidence": ("confiden", "doubt", "insecure", "proud", "imposter", "impostor", "self-esteem"),
    "gratitude": ("grateful", "gratitude", "thankful", "appreciat", "blessed"),
}  # fmt: skip

_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


def themes_of(text: str) -> list[str]:
    """The themes a text touches, in the lexicon's order."""
    words = _WORD.findall(clean(text))  # the shared normal form: "h\u200bealth" is a health word too
    return [theme for theme, stems in THEMES.items() if any(word.startswith(stems) for word in words)]
