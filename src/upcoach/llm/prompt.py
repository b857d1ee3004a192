"""Chat messages -> prompt tokens with the GGUF's own chat template (or a plain transcript for base models),
plus the token boundary of the leading system prompt, which the engine keeps warm in its prefix cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from upcoach.llm.base import ChatMessage

PLAIN_STOPS = ("\nUser:", "\nuser:")
_PROBE = "\ue000upcoach-probe\ue000"  # private-use characters: never in real text


@dataclass(frozen=True)
class RenderedPrompt:
    tokens: list[int]
    boundary: int  # tokens of the leading system message(s); 0 when there is none
    stops: tuple[str, ...] = ()


class PromptFormatter:
    def __init__(self, llama: Any, template: str | None) -> None:
        self._llama = llama
        self._jinja = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = llama._model
            eos = model.token_get_text(llama.token_eos()) if llama.token_eos() != -1 else ""
            bos = model.token_get_text(llama.token_bos()) if llama.token_bos() != -1 else ""
            self._jinja = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
            self._jinja_prefix = Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos, add_generation_prompt=False
            )

    @classmethod
    def from_llama(cls, llama: Any) -> PromptFormatter:
        return cls(llama, llama.metadata.get("tokenizer.chat_template"))

    @property
    def has_template(self) -> bool:
        return self._jinja is not None

    def render(self, messages: Sequence[ChatMessage], continuation: str = "") -> RenderedPrompt:
        n_system = 0
        while n_system < len(messages) and messages[n_system].role in ("system", "developer"):
            n_system += 1
        if self._jinja is None:
            text = _plain(messages) + (" " + continuation if continuation else "")
            prefixes = [_plain(messages[:n_system], open_turn=False)] if n_system else []
            return self._tokens(text, prefixes, add_bos=True, stops=PLAIN_STOPS)
        as_dicts = [{"role": _template_role(m.role), "content": m.content} for m in messages]
        text = self._jinja(messages=as_dicts).prompt + continuation
        prefixes = []
        if n_system:
            # Longest first: the system prompt plus the opener of the next user turn (e.g. ChatML's
            # "<|im_start|>user\n"), which every new conversation shares too; then the system prompt alone.
            probe = self._jinja_prefix(messages=[*as_dicts[:n_system], {"role": "user", "content": _PROBE}]).prompt
            if _PROBE in probe:
                prefixes.append(probe[: probe.index(_PROBE)])
            prefixes.append(self._jinja_prefix(messages=as_dicts[:n_system]).prompt)
        return self._tokens(text, prefixes, add_bos=False, stops=())

    def _tokens(self, text: str, prefixes: list[str], *, add_bos: bool, stops: tuple[str, ...]) -> RenderedPrompt:
        """Tokenize ``text``; the boundary is the first candidate prefix whose tokens are a token prefix of it."""
        tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        for prefix in prefixes:
            if prefix and text.startswith(prefix):
                prefix_tokens = self._llama.tokenize(prefix.encode("utf-8"), add_bos=add_bos, special=True)
                if tokens[: len(prefix_tokens)] == prefix_tokens:
                    return RenderedPrompt(tokens, len(prefix_tokens), stops)
        return RenderedPrompt(tokens, 0, stops)


def _template_role(role: str) -> str:
    return "system" if role == "developer" else role


def _plain(messages: Sequence[ChatMessage], *, open_turn: bool = True) -> str:
    """A transcript for base models without a chat template (e.g. gemma3-270m): few-shot friendly."""
    lines: list[str] = []
    for message in messages:
        if message.role in ("system", "developer"):
            lines.append(message.content.strip() + "\n")
        else:
            speaker = "User" if message.role == "user" else "Coach"
            lines.append(f"{speaker}: {message.content.strip()}")
    text = "\n".join(lines) + "\n"
    return text + "Coach:" if open_turn else text
