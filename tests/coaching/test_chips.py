"""What the chips service keeps from the model's lines, and the grammar it asks for."""

from __future__ import annotations

from upcoach.coaching.chips import _conversation, _tail, chip_grammar, clean_chip, parse_chips
from upcoach.llm.base import ChatMessage


def test_model_lines_are_cleaned_deduplicated_and_cut_to_count() -> None:
    output = '1. Tell me more.\n- tell me more\n"I\'ll try tonight"\nHelp me break it down\nA B C D E F G H I J\nx\n'
    # The numbering, quotes and trailing "." go; a case-insensitive duplicate, a copy of the prompt's examples and
    # a one-letter line are dropped; a line over 8 words is cut to 8.
    assert parse_chips(output, 5) == ["Tell me more", "I'll try tonight", "A B C D E F G H"]
    assert parse_chips(output, 2) == ["Tell me more", "I'll try tonight"]
    assert clean_chip("  Why not?  ") == "Why not?"


def test_grammar_shape_depends_on_count_and_script() -> None:
    assert chip_grammar(4).startswith("root ::= line line line line\n")
    assert "{0,7}" in chip_grammar(1)  # 1 + 7 words at most
    assert "\\u3000" in chip_grammar(2, "en") and "\\u3000" not in chip_grammar(2, "ja-JP")


def test_only_the_end_of_the_last_turns_goes_to_the_model() -> None:
    long = "word " * 200 + "the actual question at the end?"
    messages = [ChatMessage("system", "ignored"), ChatMessage("assistant", "How was it?"), ChatMessage("user", long)]
    prompt = _conversation(messages, 3)
    assert prompt.startswith("Coach: How was it?\nUser: …") and prompt.endswith("the end?\nWrite 3 replies.")
    assert len(_tail(long)) <= 201 and "ignored" not in prompt
