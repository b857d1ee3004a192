"""The answer checks on the answers issue 15 reported, and on the good answers they must let through."""

from __future__ import annotations

import pytest

from upcoach.coaching.answer_checks import CHECKS, AnswerWatch, check_answer

WATER = "How do I drink more water during the day?"
PHONE = "How can I stop checking my phone in bed?"
GOOD_WATER = (
    "Keep a refillable water bottle on your desk and finish it by lunch. Drink a glass of water with every meal. "
    "Set a gentle reminder on your phone every two hours to take a few sips."
)


def checks_of(answer: str, question: str = WATER) -> list[str]:
    return [f.check for f in check_answer(answer, question)]


@pytest.mark.parametrize(
    ("answer", "question", "check"),
    [
        ("I'm sorry, I can't assist with that.", WATER, "refusal"),
        ("I am sorry, but I cannot help with that request.", PHONE, "refusal"),
        ("As an AI, I can't access your alarm, but you could try a few things.", PHONE, "refusal"),
        ("Es tut mir leid, aber ich kann dabei nicht helfen.", "Wie trinke ich mehr Wasser?", "refusal"),
        ("Lo siento, pero no puedo ayudarte con eso.", "¿Cómo bebo más agua?", "refusal"),
        (
            "Here is a script:\n```python\nimport subprocess\nsubprocess.run(['adb', 'shell'])\n```",
            PHONE,
            "unrequested_code",
        ),
        ("Run adb shell settings put global to lock the screen at night.", PHONE, "unrequested_code"),
        ("Take water from the river every morning and keep it in a jug.", WATER, "unsafe_advice"),
        ("Make water bins made from soap and vinegar and drink from them.", WATER, "unsafe_advice"),
        ("Try to drink 12 liters every day to stay hydrated.", WATER, "unsafe_advice"),
        ("A glass of wine will help you fall asleep faster.", "How do I fall asleep faster?", "unsafe_advice"),
        ("Drink a glass with each meal. Keep a bottle nearby. Drink a glass with each meal.", WATER, "repetition"),
        (
            "Walking is a great way to start the day. Put on comfortable shoes and pick a route through a park. "
            "Walk with a friend, listen to a podcast, and enjoy the fresh air and the trees and the birds around you. "
            "Try it for ten minutes after lunch and see how you feel about it.",
            "What can I do about skipping my morning run?",
            "off_topic",
        ),
    ],
)
def test_each_reported_failure_is_caught(answer: str, question: str, check: str) -> None:
    assert check in CHECKS
    assert checks_of(answer, question) == [check]


@pytest.mark.parametrize(
    ("answer", "question"),
    [
        (GOOD_WATER, WATER),
        ("Charge your phone outside the bedroom. Use a simple alarm clock instead. Read a paper book in bed.", PHONE),
        ("1. Drink a glass of water when you wake up.\n2. Keep a bottle on your desk.\n3. Refill it at lunch.", WATER),
        (
            "Here is a small script:\n```python\nprint('drink water')\n```",
            "Can you write me a Python script that reminds me to drink water?",
        ),
        (
            "Stell dir eine Wasserflasche auf den Schreibtisch. Trink zu jeder Mahlzeit ein Glas Wasser.",
            "Wie kann ich mehr Wasser trinken?",
        ),
        ("Talk to your doctor before you stop taking any medication.", "Should I stop my meds?"),
    ],
)
def test_good_answers_pass(answer: str, question: str) -> None:
    assert check_answer(answer, question) == []


def test_streamed_pieces_give_the_whole_answer_verdict_on_the_sentence_that_completes() -> None:
    answer = "Keep a bottle on your desk. Drink a glass with each meal. Keep a bottle on your desk. More text"
    watch = AnswerWatch(WATER)
    verdicts = [[f.check for f in watch.feed(answer[i : i + 7])] for i in range(0, len(answer), 7)]
    first = next(i for i, found in enumerate(verdicts) if found)
    # Caught once the repeated sentence is complete, not before.
    assert verdicts[first] == ["repetition"]
    assert (first + 1) * 7 > answer.index("desk. More") + len("desk.")
    assert watch.pending.strip().startswith("More")


def test_a_code_fence_is_caught_before_its_sentence_ends() -> None:
    watch = AnswerWatch(PHONE)
    assert [f.check for f in watch.feed("Sure:\n```py")] == ["unrequested_code"]
