from __future__ import annotations

from pathlib import Path

import pytest

from upcoach.config import Settings, physical_cores


def test_settings_come_from_upcoach_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UPCOACH_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("UPCOACH_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
    monkeypatch.setenv("UPCOACH_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("UPCOACH_LOCAL_MODEL", "gemma3-270m")
    monkeypatch.setenv("UPCOACH_THREADS", "3")
    monkeypatch.setenv("UPCOACH_QUEUE_DEPTH", "7")
    monkeypatch.setenv("UPCOACH_CONTEXT_SIZE", "2048")
    settings = Settings()
    assert settings.data_dir == (tmp_path / "d").resolve()
    assert settings.effective_database_url == "postgresql://127.0.0.1:5432/test"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.local_model, settings.threads, settings.queue_depth, settings.context_size) == (
        "gemma3-270m", 3, 7, 2048,
    )  # fmt: skip


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("UPCOACH_DATA_DIR", "UPCOACH_DATABASE_URL", "UPCOACH_THREADS", "UPCOACH_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings()
    assert settings.data_dir == (tmp_path / "upcoach").resolve()
    assert settings.effective_database_url == f"sqlite:///{settings.data_dir / 'upcoach.db'}"
    assert settings.local_model == "qwen2.5-0.5b-instruct"
    assert settings.threads == physical_cores() >= 1
    assert settings.redis_url is None


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPCOACH_THREADS", "0")
    with pytest.raises(ValueError, match="threads"):
        Settings()
