"""Output-side check for system-prompt leakage (OWASP LLM07).

A random canary is appended to the system prompt; if the model's answer contains it, or a long verbatim run of
the system prompt, the prompt leaked, whatever trick the user found. Both checks look at the ``normalize`` form
as well, so a leak spelled in full-width letters, with zero-width characters or in leetspeak still counts; the
canary is also compared with every non-alphanumeric character dropped ("u c c - 9 f …" or "ucc9f…").

A system prompt that tells the model to quote a passage verbatim (a crisis-line text, a disclaimer) would make
every such answer a "leak": keep passages meant for users out of ``system_prompt`` when calling ``leaks``.
"""

from __future__ import annotations

import re
import secrets

from upcoach.security.textnorm import normalize

CANARY_PREFIX = "ucc"
LEAK_CHUNK_CHARS = 60
_NOT_ALNUM = re.compile(r"[\W_]+")


def make_canary() -> str:
    """A fresh random token, e.g. ``ucc-5f0c2a9e41d7b3c8`` (64 random bits)."""
    return f"{CANARY_PREFIX}-{secrets.token_hex(8)}"


def guard_system_prompt(system_prompt: str, canary: str) -> str:
    """The system prompt with the canary on a comment-like last line."""
    return f"{system_prompt.rstrip()}\n\n<!-- {canary} -->"


def _compact(text: str) -> str:
    return _NOT_ALNUM.sub("", text)


def leaks(answer: str, canary: str, system_prompt: str) -> bool:
    """True if ``answer`` reveals the canary or a verbatim chunk (≥ 60 chars) of ``system_prompt``."""
    if canary and canary in answer:
        return True
    said = normalize(answer)
    if canary:
        token = normalize(canary)
        if token in said:
            return True
        compact_token = _compact(token)
        # Too short a token could turn up by chance once spaces and punctuation are gone.
        if len(compact_token) >= 12 and compact_token in _compact(said):
            return True
    prompt = normalize(system_prompt)
    if len(prompt) < LEAK_CHUNK_CHARS or len(said) < LEAK_CHUNK_CHARS:
        return False
    # Every chunk of the prompt, at every offset: any common run of ≥ 60 characters contains one of them.
    chunks = {prompt[i : i + LEAK_CHUNK_CHARS] for i in range(len(prompt) - LEAK_CHUNK_CHARS + 1)}
    return any(said[i : i + LEAK_CHUNK_CHARS] in chunks for i in range(len(said) - LEAK_CHUNK_CHARS + 1))
