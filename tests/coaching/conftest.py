"""The storage fixtures (SQLite and a throwaway PostgreSQL database) for the coaching tests."""

from tests.storage.conftest import database_url, db, migrated_db, postgres_url  # noqa: F401
