"""The library in the database: publishing by content version, and full-text search on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from upcoach.coaching.library import load_builtin
from upcoach.coaching.strategies import StrategyRepository
from upcoach.storage.database import Database

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def repo(migrated_db: Database) -> StrategyRepository:
    repository = StrategyRepository(migrated_db)
    await repository.publish(load_builtin())
    return repository


@pytest.mark.parametrize(
    ("query", "expected_category"),
    [
        ("I can't sleep, my mind keeps racing at night", "sleep"),
        ("my colleague is difficult and we had a conflict", "relationships"),
        ("everything feels urgent and I need to prioritise my tasks", "time-management"),
        ("I feel like a fraud at work, impostor", "confidence"),
        ("I want to ask my manager for a promotion", "career"),
        ("how do I breathe to calm down when I'm anxious", "stress"),
    ],
)
async def test_search_ranks_the_matching_topic_first(
    repo: StrategyRepository, query: str, expected_category: str
) -> None:
    hits = await repo.search(query, limit=3)
    assert hits, query
    assert hits[0].strategy.category == expected_category, [(h.strategy.id, h.score) for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_stemming_filters_and_stopwords(repo: StrategyRepository) -> None:
    # "procrastinating" finds strategies that say "procrastination" (stemming on both backends).
    assert any("procrastination" in hit.strategy.tags for hit in await repo.search("procrastinating", limit=5))
    sleep_only = await repo.search("routine", category="sleep", limit=20)
    assert sleep_only and {hit.strategy.category for hit in sleep_only} == {"sleep"}
    tagged = await repo.search(None, tag="breathing", limit=50)
    assert {hit.strategy.id for hit in tagged} == {"stress-box-breathing", "stress-physiological-sigh"}
    assert await repo.search("the and of I you", limit=5) == []
    assert await repo.search("zzzqqq", limit=5) == []
    # Query syntax of either engine is neutralised: quotes, operators and parentheses are just words.
    assert await repo.search('sleep" OR (NEAR AND -x) | !:* ', limit=3)


async def test_publish_is_idempotent_and_updates_search_and_history(repo: StrategyRepository) -> None:
    first = repo.current
    assert first is not None
    again = await repo.publish(load_builtin())
    assert again == first  # same version, same creation time: nothing rewritten

    strategies = load_builtin()
    edited = [
        replace(s, summary=s.summary + " Works well for zebra keepers.") if s.id == "sleep-nap" else s
        for s in strategies
        if s.id != "focus-pomodoro"
    ]
    second = await repo.publish(edited)
    assert second.version != first.version
    assert "focus-pomodoro" not in second.manifest and "focus-pomodoro" in first.manifest
    assert second.manifest["sleep-nap"] != first.manifest["sleep-nap"]
    assert [hit.strategy.id for hit in await repo.search("zebra keepers")] == ["sleep-nap"]
    assert await repo.search("pomodoro") == []
    assert await repo.get_many(["focus-pomodoro"]) == []
    # Earlier manifests stay readable: bundle deltas are computed against them.
    assert (await repo.manifest(first.version)) == first

    back = await repo.publish(strategies)
    assert back.version == first.version and back.created_at >= second.created_at
    assert [hit.strategy.id for hit in await repo.search("pomodoro", limit=1)] == ["focus-pomodoro"]
    assert await repo.search("zebra keepers") == []


@pytest.mark.parametrize(
    ("language", "query", "expected_category"),
    [
        ("de", "Ich kann nachts nicht einschlafen, weil meine Gedanken kreisen", "sleep"),
        ("de", "Mein Kollege und ich hatten einen Konflikt", "relationships"),
        ("fr", "je repousse toujours tout au lendemain, procrastination", "motivation"),
        ("fr", "je veux demander une promotion à mon manager", "career"),
        ("es", "me siento un impostor en el trabajo", "confidence"),
        ("es", "necesito respirar para calmar la ansiedad", "stress"),
        ("it", "non riesco a dormire, la mente corre di notte", "sleep"),
        ("it", "ho troppe riunioni in agenda", "time-management"),
    ],
)
async def test_search_in_each_language_finds_that_languages_strategy(
    repo: StrategyRepository, language: str, query: str, expected_category: str
) -> None:
    hits = await repo.search(query, limit=3, language=language)
    assert hits, query
    assert {h.strategy.locale for h in hits} == {language}  # only the conversation's language is searched
    assert expected_category in {h.strategy.category for h in hits[:2]}, [(h.strategy.id, h.score) for h in hits]


async def test_languages_are_searched_with_their_own_stems_and_stop_words(repo: StrategyRepository) -> None:
    # Stems: "schläft"/"Schlafens" and "Pausen"/"Pause" meet; accents may be left out ("estres" finds "estrés").
    assert any(h.strategy.category == "sleep" for h in await repo.search("Schlafens", limit=5, language="de"))
    assert any("estrés agudo" in h.strategy.tags for h in await repo.search("estres agudo", limit=3, language="es"))
    # Only stop words of the language: nothing to search for.
    assert await repo.search("und die der ich mit", limit=5, language="de") == []
    assert await repo.search("et le la je de", limit=5, language="fr-CA") == []
    # An English query word inside a German question does not reach English material.
    assert all(h.strategy.locale == "de" for h in await repo.search("Pomodoro bitte", limit=5, language="de"))
    # No language: a listing across all of them.
    every = await repo.search(None, category="sleep", limit=100, language=None)
    assert {h.strategy.locale for h in every} >= {"en", "de", "fr", "es", "it"}


async def test_two_processes_starting_at_once_publish_the_library_once(migrated_db: Database) -> None:
    """Two workers start on one database together: the second waits for the first and finds the work done (on
    SQLite the two read-then-write transactions used to collide on the strategies' primary key)."""
    other = Database(migrated_db.url)  # a second engine: its own connections, as another process has
    try:
        library = load_builtin()
        first, second = await asyncio.gather(
            StrategyRepository(migrated_db).publish(library), StrategyRepository(other).publish(library)
        )
        assert first.version == second.version
        assert len(await StrategyRepository(other).search("sleep", limit=3)) == 3
    finally:
        await other.engine.dispose()
