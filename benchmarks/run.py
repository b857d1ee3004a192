"""`make bench`: run the benchmarks and write docs/benchmarks.md (and a JSON copy in benchmarks/results/)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import local_engine  # noqa: E402
from benchmarks.common import machine, median  # noqa: E402
from upcoach.config import Settings  # noqa: E402
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry  # noqa: E402
from upcoach.modelstore.fetch import fetch  # noqa: E402

COMMAND = "make bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    settings = Settings()
    model = fetch(get_entry(DEFAULT_MODEL), settings.models_dir)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory() as tmp:
        results = local_engine.run(model, args.threads, args.ctx, Path(tmp))
    raw_decode = median(results[0].decode_tps)
    (ROOT / "benchmarks" / "results" / "local_engine.json").write_text(
        json.dumps([asdict(r) for r in results], indent=2)
    )
    section = "\n".join(
        [
            "## Local engine: decode speed, time to first token, memory",
            "",
            f"- command: `{COMMAND}` (benchmarks/local_engine.py); date: {when}",
            f"- machine: {machine()}",
            f"- model: {DEFAULT_MODEL} ({model.name}), {args.threads} threads, context {args.ctx}; system prompt "
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
    header = "# Benchmarks\n\nEvery figure below was produced by the command beside it, on the machine named there.\n\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + section)
    print(section)


if __name__ == "__main__":
    main()
