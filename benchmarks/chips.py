"""Suggestion-chip latency with the real local model, end to end over HTTP (standalone: `python benchmarks/chips.py`).

Starts `upcoach serve` with the default catalog model in a fresh data folder, warms it up (the chips system
prompts enter the engine's prefix cache), then sends ~40 varied requests one after another: different
conversations, counts 1-5, the four prompt styles. It reports the client-measured latency of all answers AND of
model-written answers alone: the library fallback answers in a few milliseconds, so mixing the two would flatter a
slow model. The budget is raised for the run so every request is a model measurement, unless ``--budget-ms`` is
given (then the share served by the library shows what a user would see with that budget).

``--flow`` measures the realistic flow instead: a coaching answer (`POST /api/ai/hybrid/process`), then, a second
later (``FLOW_PAUSE_S``, the user reading), the chips request for that conversation with the answer in it. The
chips were computed ahead in the background meanwhile (coaching/chips_ahead.py), so this is the latency a user
sees in the app; the runs above are the cold case (a conversation the server never answered).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import free_port, machine, pct, python, start_server  # noqa: E402
from upcoach.config import Settings  # noqa: E402
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry  # noqa: E402
from upcoach.modelstore.fetch import fetch  # noqa: E402

CONVERSATIONS = [
    [("assistant", "What would make this week feel like a success for you?"),
     ("user", "I keep procrastinating on my thesis and I feel guilty all the time.")],
    [("user", "I can't sleep, my mind races at night about work.")],
    [("assistant", "That sounds stressful. What happened?"),
     ("user", "My manager criticised my presentation in front of everyone.")],
    [("user", "I want to start running again but I never find time.")],
    [("assistant", "How are you feeling about the new role?"), ("user", "Honestly a bit like an impostor.")],
    [("user", "I check my phone constantly when I should be focusing.")],
    [("assistant", "What did you try last week?"), ("user", "The morning routine, but I only managed two days.")],
    [("user", "My colleague keeps taking credit for my work and I don't know what to say.")],
    [("user", "I have too many goals and no energy for any of them.")],
    [("assistant", "What would you like to work on today?"), ("user", "Saying no to extra projects.")],
]  # fmt: skip
STYLES = ["default", "action", "question", "feeling"]
WARMUP = 8
REQUESTS = 40
FLOW_PAUSE_S = 1.0
FLOW_ANSWER_TOKENS = 80


def run(budget_ms: float | None, requests: int, flow: bool = False) -> dict[str, object]:
    model = fetch(get_entry(DEFAULT_MODEL), Settings().models_dir)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        (models / model.name).symlink_to(model)
        env = {"UPCOACH_DATA_DIR": tmp, "UPCOACH_PORT": str(port), "UPCOACH_AUTH": "off",
               "UPCOACH_CHIPS_BUDGET_MS": str(budget_ms or 60_000)}  # fmt: skip
        server = start_server("chips", [python(), "-m", "upcoach.cli", "serve"], port, "/readyz", env)
        try:
            with httpx.Client(base_url=server.base_url, timeout=120) as client:
                cases = itertools.cycle(itertools.product(range(len(CONVERSATIONS)), STYLES, [3, 1, 5, 2, 4]))
                for _ in range(WARMUP):  # every style's system prompt into the prefix cache, the engine warm
                    _ask(client, *next(cases))
                if flow:
                    rows = [_after_answer(client, i % len(CONVERSATIONS)) for i in range(requests)]
                else:
                    rows = [_ask(client, *next(cases)) for _ in range(requests)]
        finally:
            server.stop()
    return {"model": f"{DEFAULT_MODEL} ({model.name})", "budget_ms": budget_ms, "rows": rows, "flow": flow}


def _after_answer(client: httpx.Client, conversation: int) -> dict[str, object]:
    """The app's flow: the coach answers, the user reads for a second, the app asks for chips."""
    messages = [{"role": role, "content": content} for role, content in CONVERSATIONS[conversation]]
    answered = client.post("/api/ai/hybrid/process", json={"messages": messages, "maxTokens": FLOW_ANSWER_TOKENS})
    answered.raise_for_status()
    time.sleep(FLOW_PAUSE_S)
    answer = answered.json()["response"]["content"]
    return _ask(client, conversation, "default", 3, [*messages, {"role": "assistant", "content": answer}])


def _ask(
    client: httpx.Client, conversation: int, style: str, count: int, messages: list[dict[str, str]] | None = None
) -> dict[str, object]:
    if messages is None:
        messages = [{"role": role, "content": content} for role, content in CONVERSATIONS[conversation]]
    started = time.perf_counter()
    response = client.post("/api/coach/suggestions", json={"messages": messages, "count": count, "style": style})
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    body = response.json()
    return {"ms": elapsed, "source": body["source"], "count": count, "style": style,
            "model_ran": body["modelLatencyMs"] is not None,
            "library_chips": sum(s["source"] == "library" for s in body["suggestions"]),
            "chips": [s["text"] for s in body["suggestions"]], "reason": body["reason"],
            "precomputed": bool(body.get("precomputed"))}  # fmt: skip


def summary(result: dict[str, object]) -> str:
    rows: list[dict[str, object]] = result["rows"]  # type: ignore[assignment]
    # Every answer the model worked on counts as a model answer, also when its chips were unusable and the
    # library answered: otherwise discarded (slow) generations would vanish from the model's figures.
    model_ms = [float(r["ms"]) for r in rows if r["model_ran"]]  # type: ignore[arg-type]
    all_ms = [float(r["ms"]) for r in rows]  # type: ignore[arg-type]
    by_count = {
        c: [float(r["ms"]) for r in rows if r["model_ran"] and r["count"] == c]  # type: ignore[arg-type]
        for c in range(1, 6)
    }
    chips_total = sum(int(r["count"]) for r in rows)  # type: ignore[call-overload]
    from_library = sum(int(r["library_chips"]) for r in rows)  # type: ignore[call-overload]

    def line(label: str, values: list[float]) -> str:
        if not values:
            return f"| {label} | 0 | - | - | - |"
        return f"| {label} | {len(values)} | {pct(values, 50):.0f} | {pct(values, 95):.0f} | {pct(values, 99):.0f} |"

    share = sum(r["source"] == "model" for r in rows) / len(rows) if rows else 0.0
    budget = result["budget_ms"]
    out = [
        "| answers | n | P50 ms | P95 ms | P99 ms |",
        "|---|---:|---:|---:|---:|",
        line("model only (headline)", model_ms),
        *(line(f"model only, count {c}", values) for c, values in by_count.items() if values),
        line("all answers" + (f" (budget {budget:.0f} ms)" if budget else ""), all_ms),
        "",
        f"Answers labelled `source: model`: {share:.0%}, `library`: {1 - share:.0%}; chips taken from the library "
        f"(fallbacks, and fill-ins for unusable model lines such as copies of the prompt's examples): "
        f"{from_library / max(chips_total, 1):.0%} of {chips_total}.",
    ]
    if result.get("flow"):
        ahead = sum(bool(r["precomputed"]) for r in rows) / len(rows) if rows else 0.0
        out.append(f"Served from chips computed ahead: {ahead:.0%} (the rest were written for the request).")
    return "\n".join(out)


GATE_MS = 300.0
# The fallback itself takes a few ms (search + HTTP): the budget leaves room for it within the gate.
GATE_BUDGET_MS = 250.0
HEADING = "## Suggestion chips:"


def _verdict(result: dict[str, object]) -> str:
    rows: list[dict[str, object]] = result["rows"]  # type: ignore[assignment]
    model_ms = [float(r["ms"]) for r in rows if r["model_ran"]]  # type: ignore[arg-type]
    p95 = pct(model_ms, 95)
    met = "met" if p95 <= GATE_MS else "NOT met"
    if result.get("flow"):
        return (f"**Gate P95 <= {GATE_MS:.0f} ms on the realistic flow (answer, chips request {FLOW_PAUSE_S:.0f} s "
                f"later): {met}** (P95 {p95:.0f} ms, model-written chips, most computed ahead).")  # fmt: skip
    return (
        f"**Gate P95 <= {GATE_MS:.0f} ms by model-written chips: {met}** (model-only P95 {p95:.0f} ms). Decode is the "
        "floor: ~8 batch steps per answer, and a step of n branches costs ~n/2 single steps on these 2 cores; "
        "the library fallback keeps answers inside the "
        "gate, labelled `source: library`."
    )


def section(command: str) -> str:
    """The docs/benchmarks.md section (`make bench`): model-only latency, then what users get under the gate."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    flow = run(None, REQUESTS // 2, flow=True)
    model_only = run(None, REQUESTS)
    gated = run(GATE_BUDGET_MS, REQUESTS)
    (ROOT / "benchmarks" / "results" / "chips.json").write_text(
        json.dumps({"flow": flow, "model_only": model_only, "gated": gated}, indent=2, ensure_ascii=False)
    )
    return "\n".join(
        [
            f"{HEADING} latency of model-written chips, and the library fallback under a {GATE_MS:.0f} ms budget",
            "",
            f"- command: `{command}` (benchmarks/chips.py); date: {when}",
            f"- machine: {machine()}",
            f"- model: {model_only['model']}; `POST /api/coach/suggestions` over HTTP, {REQUESTS} requests one at a "
            f"time after {WARMUP} warm-up, {len(CONVERSATIONS)} conversations x counts 1-5 x the 4 styles; client-"
            "measured. Greedy decoding under the chips grammar (sample-then-check, llm/constrained.py); "
            "count > 1: one branch per chip, all decoded in one llama.cpp batch per step (`ChatRequest.branches`)",
            "",
            _verdict(flow),
            "",
            f"Realistic flow: {REQUESTS // 2} coaching answers ({FLOW_ANSWER_TOKENS} tokens at most), each followed "
            f"{FLOW_PAUSE_S:.0f} s later by the chips request for the conversation with that answer (count 3).",
            "",
            summary(flow),
            "",
            _verdict(model_only),
            "",
            "Cold, model only (budget lifted, every answer written by the model, nothing computed ahead):",
            "",
            summary(model_only),
            "",
            f"With a budget that fits the plan's {GATE_MS:.0f} ms gate "
            f"(`UPCOACH_CHIPS_BUDGET_MS={GATE_BUDGET_MS:.0f}`): what a user would get.",
            "",
            summary(gated),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget-ms", type=float, default=None, help="the chips latency budget (default: none)")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--flow", action="store_true", help="answer first, chips request a second later")
    args = parser.parse_args()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result = run(args.budget_ms, args.requests, flow=args.flow)
    (ROOT / "benchmarks" / "results" / "chips.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    flags = (f" --budget-ms {args.budget_ms}" if args.budget_ms else "") + (" --flow" if args.flow else "")
    print(f"- command: `python benchmarks/chips.py{flags} --requests {args.requests}`; date: {when}")
    print(f"- machine: {machine()}")
    print(f"- model: {result['model']}; {args.requests} requests after {WARMUP} warm-up, one at a time")
    print()
    print(_verdict(result))
    print(summary(result))


if __name__ == "__main__":
    main()
