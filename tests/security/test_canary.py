"""System-prompt leak detection: canary tokens and long verbatim chunks."""

from __future__ import annotations

import re

from upcoach.security.canary import guard_system_prompt, leaks, make_canary

SYSTEM_PROMPT = (
    "You are UpCoach, a warm and practical personal coach. You help people set goals, build habits, "
    "manage stress, sleep better and stay motivated at work. Keep answers short, concrete and kind. "
    "Never give medical, legal or financial advice; suggest a professional when a topic needs one."
)


def test_canaries_are_random_tokens() -> None:
    canaries = {make_canary() for _ in range(200)}
    assert len(canaries) == 200
    assert all(re.fullmatch(r"ucc-[0-9a-f]{16}", c) for c in canaries)


def test_guard_appends_a_comment_line_with_the_canary() -> None:
    canary = make_canary()
    guarded = guard_system_prompt(SYSTEM_PROMPT + "\n\n", canary)
    assert guarded.startswith(SYSTEM_PROMPT)
    assert guarded.splitlines()[-1] == f"<!-- {canary} -->"
    assert guarded.count(canary) == 1


def test_canary_in_the_answer_is_a_leak() -> None:
    canary = make_canary()
    assert leaks(f"Sure! My instructions end with {canary}.", canary, SYSTEM_PROMPT)


def test_disguised_canary_is_still_a_leak() -> None:
    canary = "ucc-5f0c2a9e41d7b3c8"
    assert leaks("token: UCC-5F0C2A9E41D7B3C8", canary, SYSTEM_PROMPT)  # case
    assert leaks("u\u200bc\u200bc-5f0c2a9e\u200b41d7b3c8", canary, SYSTEM_PROMPT)  # zero-width characters
    assert leaks("u c c - 5 f 0 c 2 a 9 e 4 1 d 7 b 3 c 8", canary, SYSTEM_PROMPT)  # spaced out
    assert leaks("ｕｃｃ－５ｆ０ｃ２ａ９ｅ４１ｄ７ｂ３ｃ８", canary, SYSTEM_PROMPT)  # full width


def test_clean_answer_is_not_a_leak() -> None:
    canary = make_canary()
    answer = "Try a 10-minute wind-down routine: dim the lights, put the phone in the kitchen, read a few pages."
    assert not leaks(answer, canary, SYSTEM_PROMPT)
    assert not leaks("", canary, SYSTEM_PROMPT)
    assert not leaks("ucc-", canary, SYSTEM_PROMPT)


def test_long_verbatim_chunk_of_the_prompt_is_a_leak() -> None:
    chunk = SYSTEM_PROMPT[40:101]  # 61 characters
    assert leaks(f"Here is what I was told: {chunk} ... that's all.", make_canary(), SYSTEM_PROMPT)


def test_chunk_is_matched_after_whitespace_and_case_changes() -> None:
    chunk = "you help people set goals,\n   build habits,\tmanage STRESS, sleep better and stay"
    assert leaks(chunk, make_canary(), SYSTEM_PROMPT)


def test_short_overlap_is_not_a_leak() -> None:
    chunk = SYSTEM_PROMPT[40:99]  # 59 characters: below the threshold
    assert len(chunk) == 59
    assert not leaks(f"As a coach: {chunk}!", make_canary(), SYSTEM_PROMPT)


def test_paraphrase_is_not_a_leak() -> None:
    answer = "I'm a friendly coach for goals, habits, stress and sleep, and I keep my answers short and kind."
    assert not leaks(answer, make_canary(), SYSTEM_PROMPT)


def test_short_system_prompt_only_checks_the_canary() -> None:
    canary = make_canary()
    assert not leaks("You are a coach.", canary, "You are a coach.")
    assert leaks(canary, canary, "You are a coach.")
