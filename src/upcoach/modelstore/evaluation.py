"""Score a model version offline on a fixed prompt set (latency, tokens/s, answer checks), and the sanity check
an update's smoke test applies before a new version may serve.

The prompt set ships in ``data/eval_prompts.json`` and decoding is greedy with a fixed seed, so two runs of one
version give the same answers and versions differ only by what the model does: a fair basis for choosing one.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections import Counter
from contextlib import aclosing
from dataclasses import dataclass, field
from importlib import resources

from upcoach.llm.base import Backend, ChatMessage, ChatRequest, GenerationParams

# Chat-template markers that must never reach a user: their presence means the template or the stop tokens are
# wrong for this model.
TEMPLATE_MARKERS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|assistant|>",
    "<|user|>",
    "<|eot_id|>",
    "[INST]",
    "</s>",
)
# An answer is degenerate when one word makes up more than this share of a long enough answer ...
MAX_WORD_SHARE = 0.5
MIN_WORDS_FOR_SHARE = 12
# ... or when this share of its characters are U+FFFD (bytes that did not decode: a broken vocabulary or file).
MAX_REPLACEMENT_SHARE = 0.05
EVAL_MAX_TOKENS = 96
EVAL_SEED = 7


def sanity_problems(text: str) -> list[str]:
    """Why ``text`` cannot be a real answer (empty list: it can). Cheap, model-agnostic checks."""
    stripped = text.strip()
    if not stripped:
        return ["empty answer"]
    problems: list[str] = []
    if stripped.count("\ufffd") > MAX_REPLACEMENT_SHARE * len(stripped):
        problems.append("answer does not decode as UTF-8 text")
    leaked = [marker for marker in TEMPLATE_MARKERS if marker in text]
    if leaked:
        problems.append(f"chat-template markers leaked: {', '.join(leaked)}")
    words = re.findall(r"\w+", stripped.lower())
    if len(words) >= MIN_WORDS_FOR_SHARE:
        word, count = Counter(words).most_common(1)[0]
        if count > MAX_WORD_SHARE * len(words):
            problems.append(f"degenerate answer: {word!r} is {count} of {len(words)} words")
    if len(stripped) >= 20 and len(set(stripped)) <= 2:
        problems.append("degenerate answer: one repeated character")
    return problems


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    user: str
    expect_any: tuple[str, ...] = ()
    max_chars: int | None = None


@dataclass(frozen=True)
class PromptSet:
    system: str
    prompts: tuple[EvalPrompt, ...]


def load_prompt_set() -> PromptSet:
    raw = json.loads(resources.files("upcoach.modelstore").joinpath("data/eval_prompts.json").read_text())
    prompts = tuple(
        EvalPrompt(p["id"], p["user"], tuple(k.lower() for k in p.get("expectAny", ())), p.get("maxChars"))
        for p in raw["prompts"]
    )
    return PromptSet(raw.get("system", ""), prompts)


def answer_checks(prompt: EvalPrompt, text: str) -> list[str]:
    """Failed checks for one answer: the sanity checks plus the prompt's expected keywords and length."""
    failures = sanity_problems(text)
    lowered = text.lower()
    if prompt.expect_any and not any(keyword in lowered for keyword in prompt.expect_any):
        failures.append(f"none of the expected keywords: {', '.join(prompt.expect_any)}")
    if prompt.max_chars is not None and len(text.strip()) > prompt.max_chars:
        failures.append(f"answer is {len(text.strip())} characters, more than {prompt.max_chars}")
    return failures


@dataclass
class PromptResult:
    id: str
    passed: bool
    failures: list[str]
    first_token_ms: float | None
    total_ms: float
    completion_tokens: int
    tokens_per_second: float | None


@dataclass
class EvalReport:
    model: str
    results: list[PromptResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    def to_json(self) -> dict[str, object]:
        ttfts = [r.first_token_ms for r in self.results if r.first_token_ms is not None]
        rates = [r.tokens_per_second for r in self.results if r.tokens_per_second is not None]
        return {
            "model": self.model,
            "passed": self.passed,
            "total": len(self.results),
            "score": round(self.passed / len(self.results), 3) if self.results else None,
            "firstTokenMsMean": round(statistics.fmean(ttfts), 1) if ttfts else None,
            "totalMsMean": round(statistics.fmean(r.total_ms for r in self.results), 1) if self.results else None,
            "tokensPerSecondMean": round(statistics.fmean(rates), 1) if rates else None,
            "prompts": [
                {
                    "id": r.id,
                    "passed": r.passed,
                    "failures": r.failures,
                    "firstTokenMs": round(r.first_token_ms, 1) if r.first_token_ms is not None else None,
                    "totalMs": round(r.total_ms, 1),
                    "completionTokens": r.completion_tokens,
                    "tokensPerSecond": round(r.tokens_per_second, 1) if r.tokens_per_second is not None else None,
                }
                for r in self.results
            ],
        }


async def evaluate(
    backend: Backend, model: str, prompt_set: PromptSet | None = None, *, max_tokens: int = EVAL_MAX_TOKENS
) -> EvalReport:
    """Run every prompt through ``backend`` one at a time (so latencies are not queueing) and check the answers."""
    prompt_set = prompt_set or load_prompt_set()
    report = EvalReport(model)
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=EVAL_SEED)
    for prompt in prompt_set.prompts:
        messages = (ChatMessage("system", prompt_set.system), ChatMessage("user", prompt.user))
        request = ChatRequest(messages if prompt_set.system else messages[1:], params, f"eval-{prompt.id}")
        started = time.perf_counter()
        first: float | None = None
        text: list[str] = []
        tokens = 0
        async with aclosing(backend.stream(request)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                if chunk.text and first is None:
                    first = time.perf_counter()
                text.append(chunk.text)
                if chunk.final is not None:
                    tokens = chunk.final.usage.completion_tokens
        ended = time.perf_counter()
        answer = "".join(text)
        failures = answer_checks(prompt, answer)
        decode_s = ended - first if first is not None else 0.0
        report.results.append(
            PromptResult(
                id=prompt.id,
                passed=not failures,
                failures=failures,
                first_token_ms=(first - started) * 1000 if first is not None else None,
                total_ms=(ended - started) * 1000,
                completion_tokens=tokens,
                tokens_per_second=(tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else None,
            )
        )
    return report
