"""`make bench`: run the benchmarks and write docs/benchmarks.md (and a JSON copy of each in benchmarks/results/).

`--only local|gateway|decision|routing|chips|modelload|quality|concurrency` runs one benchmark and replaces only
its section; the others are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import chips, concurrency, decision, gateway, local_engine, model_load, quality, routing  # noqa: E402
from benchmarks.common import machine, median  # noqa: E402
from upcoach.config import Settings  # noqa: E402
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry  # noqa: E402
from upcoach.modelstore.fetch import fetch  # noqa: E402

COMMAND = "make bench"
HEADER = "# Benchmarks\n\nEvery figure below was produced by the command beside it, on the machine named there.\n\n"
# Section key -> the start of its heading: how an existing file's sections are found again.
SECTIONS = {
    "local": "## Local engine:",
    "gateway": gateway.HEADING,
    "decision": "## Routing decision time",
    "routing": routing.HEADING,
    "chips": chips.HEADING,
    "modelload": model_load.HEADING,
    "quality": quality.HEADING,
    "concurrency": concurrency.HEADING,
}


def _command(only: str | None) -> str:
    return COMMAND if only is None else f"benchmarks/run.py --only {only}"


def _when() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def local_section(threads: int, ctx: int, command: str) -> str:
    settings = Settings()
    model = fetch(get_entry(DEFAULT_MODEL), settings.models_dir)
    when = _when()
    with tempfile.TemporaryDirectory() as tmp:
        results = local_engine.run(model, threads, ctx, Path(tmp))
    raw_decode = median(results[0].decode_tps)
    (ROOT / "benchmarks" / "results" / "local_engine.json").write_text(
        json.dumps([asdict(r) for r in results], indent=2)
    )
    return "\n".join(
        [
            f"{SECTIONS['local']} decode speed, time to first token, memory",
            "",
            f"- command: `{command}` (benchmarks/local_engine.py); date: {when}",
            f"- machine: {machine()}",
            f"- model: {DEFAULT_MODEL} ({model.name}), {threads} threads, context {ctx}; system prompt "
            f"{results[0].system_tokens} tokens; {len(local_engine.USER_MESSAGES)} users, each a new conversation "
            "with a different question, sent one after another",
            f"- decode: one stream of up to {local_engine.DECODE_TOKENS} tokens, first to last token, median of "
            f"{local_engine.DECODE_RUNS} runs; TTFT measured by the client (openai SDK, streaming) from request "
            "to first content token; raw = `Llama.generate` in process with the prompt evaluated from scratch "
            "(first TTFT column) or left in its single context by the previous request (alternating column)",
            "",
            local_engine.to_markdown(results, raw_decode),
            "",
        ]
    )


def concurrency_section(threads: int, ctx: int, parallel: int, peers: bool, command: str) -> str:
    settings = Settings()
    model = fetch(get_entry(DEFAULT_MODEL), settings.models_dir)
    when = _when()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        results = concurrency.run(model, threads, ctx, Path(tmp), parallel, peers)
    (ROOT / "benchmarks" / "results" / "concurrency.json").write_text(
        json.dumps([asdict(r) for r in results], indent=2)
    )
    return "\n".join(
        [
            f"{SECTIONS['concurrency']} many users on one local model (continuous batching)",
            "",
            f"- command: `{command}` (benchmarks/concurrency.py); date: {when}",
            f"- machine: {machine()}; load average {load:.1f} when the run started (shared with other jobs: "
            "absolute speeds are the machine's load as much as the engines', compare rows of one run only)",
            f"- model: {DEFAULT_MODEL} ({model.name}), {threads} threads, context {ctx}; every stream a new "
            f"conversation behind the coaching system prompt, up to {concurrency.STREAM_TOKENS} tokens at "
            f"temperature 0.7; N streams started together; aggregate = tokens over the span from the first stream's "
            f"first token to the last stream's last; TTFT: {concurrency.ARRIVALS} new conversations, one after "
            f"another, while {concurrency.BACKGROUND} others decode",
            "",
            concurrency.to_markdown(results),
            "",
        ]
    )


def merge(existing: str, new: dict[str, str]) -> str:
    """The file with the new sections in place of the old ones, in the file's order; sections not re-run, and
    sections other commands write (their headings are not in SECTIONS), are kept as they were."""
    out: list[str] = []
    placed: set[str] = set()
    for chunk in re.split(r"(?m)^(?=## )", existing):
        if not chunk.startswith("## "):
            continue  # the header, written anew
        key = next((key for key, heading in SECTIONS.items() if chunk.startswith(heading)), None)
        if key is None or key in placed:
            out.append(chunk.rstrip("\n") + "\n")
            continue
        placed.add(key)
        out.append(new.get(key) or chunk.rstrip("\n") + "\n")
    out += [new[key] for key in SECTIONS if key in new and key not in placed]
    return HEADER + "\n".join(out)


def decision_section(command: str) -> str:
    load = os.getloadavg()[0]
    result = decision.run()
    return "\n".join(
        [
            f"{SECTIONS['decision']}: feature extraction + policy (goal < 1 ms P99)",
            "",
            f"- command: `{command}` (benchmarks/decision.py); date: {_when()}",
            f"- machine: {machine()}; load average {load:.1f} when the run started (wall-clock timings: a busy machine "
            "preempts some decisions for milliseconds, which shows in P99 and max)",
            f"- {decision.ROUNDS:,} decisions over {len(decision._cases())} combinations of request (20 coaching "
            "questions, a ~1,300-character multi-ask request, a 21-turn conversation), hints and live state; the "
            "same `extract` + `decide` calls the engine makes per request, timed one by one",
            "",
            decision.to_markdown(result),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one benchmark; keep the other's section")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=8, help="our engine's sequence slots (concurrency)")
    parser.add_argument("--no-peers", action="store_true", help="concurrency: measure our server only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    command = _command(args.only)
    new: dict[str, str] = {}
    if args.only in (None, "local"):
        new["local"] = local_section(args.threads, args.ctx, command)
    if args.only in (None, "gateway"):
        new["gateway"] = gateway.section(command)
    if args.only in (None, "decision"):
        new["decision"] = decision_section(command)
    if args.only in (None, "routing"):
        new["routing"] = routing.section(command)
    if args.only in (None, "chips"):
        new["chips"] = chips.section(command)
    if args.only in (None, "modelload"):
        new["modelload"] = model_load.section(command)
    if args.only in (None, "quality"):
        new["quality"] = quality.section(command)
    if args.only in (None, "concurrency"):
        new["concurrency"] = concurrency_section(args.threads, args.ctx, args.parallel, not args.no_peers, command)
    existing = args.out.read_text() if args.out.exists() else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(merge(existing, new))
    print("\n".join(new.values()))


if __name__ == "__main__":
    main()
