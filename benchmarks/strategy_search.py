"""Full-text search of the strategies library per language: does a held-out question find its strategy?

    .venv/bin/python -m benchmarks.strategy_search [--database postgresql://...]

Publishes the shipped library (every language) into a fresh database (a temporary SQLite file unless
``--database`` names an empty one), then asks each question of benchmarks/data/strategy_queries.json in its own
language, as coaching/prompts.py does, and reports per language how often the expected strategy (its translation
in that language) is first and in the top 2 (prompts.py gives the model 2). Figures go to docs/languages.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from upcoach.coaching.library import load_builtin
from upcoach.coaching.strategies import StrategyRepository
from upcoach.storage.database import Database

DATA = Path(__file__).resolve().parent / "data" / "strategy_queries.json"
TOP = 2


async def run(url: str) -> dict[str, tuple[int, int, int, list[str]]]:
    db = Database(url)
    try:
        await db.migrate()
        repo = StrategyRepository(db)
        await repo.publish(load_builtin())
        results: dict[str, tuple[int, int, int, list[str]]] = {}
        for language, queries in json.loads(DATA.read_text("utf-8"))["queries"].items():
            first = top = 0
            misses: list[str] = []
            for query in queries:
                want = query["expect"] if language == "en" else f"{query['expect']}-{language}"
                ids = [hit.strategy.id for hit in await repo.search(query["q"], limit=TOP, language=language)]
                first += ids[:1] == [want]
                top += want in ids
                if want not in ids:
                    misses.append(f"{query['q']!r} -> {ids}")
            results[language] = (len(queries), first, top, misses)
        return results
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", help="an empty database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        results = asyncio.run(run(url))
    print(f"{'language':<9}{'queries':>8}{'top 1':>8}{f'top {TOP}':>8}")
    for language, (n, first, top, misses) in results.items():
        print(f"{language:<9}{n:>8}{first / n:>8.2f}{top / n:>8.2f}")
        for miss in misses:
            print(f"    missed: {miss}")


if __name__ == "__main__":
    main()
