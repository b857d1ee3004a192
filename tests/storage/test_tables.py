"""Guards on the table definitions, chiefly the privacy rule: request records never hold message text."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from upcoach.storage.database import Database
from upcoach.storage.requests import RequestRecord
from upcoach.storage.tables import Base, RequestRecordRow

# Name fragments that would suggest a column stores what people wrote or what the model answered.
MESSAGE_TEXT_HINTS = ("content", "message", "prompt_text", "text", "body", "transcript")
# Tables of text we wrote ourselves (the coaching strategies library), never what a user wrote.
AUTHORED_CONTENT_TABLES = {"coaching_strategies"}


def text_like(names: list[str]) -> list[str]:
    return [name for name in names if any(hint in name.lower() for hint in MESSAGE_TEXT_HINTS)]


def test_the_guard_itself_catches_text_columns() -> None:
    assert text_like(["id", "message_content", "prompt_text", "Body", "prompt_tokens"]) == [
        "message_content",
        "prompt_text",
        "Body",
    ]


def test_no_table_has_a_message_text_column() -> None:
    for table in Base.metadata.tables.values():
        if table.name in AUTHORED_CONTENT_TABLES:
            continue
        assert text_like(list(table.columns.keys())) == [], table.name


@pytest.mark.asyncio(loop_scope="session")
async def test_no_migrated_column_holds_message_text(migrated_db: Database) -> None:
    async with migrated_db.engine.connect() as conn:
        columns = await conn.run_sync(lambda sync: inspect(sync).get_columns("request_records"))
    names = [column["name"] for column in columns]
    assert len(names) == 22  # 0010 added routing (numbers and flags: routing/learned.py) and finish_reason
    assert text_like(names) == []


def test_record_fields_are_the_table_columns() -> None:
    assert set(RequestRecord.__dataclass_fields__) == set(RequestRecordRow.__table__.columns.keys())
