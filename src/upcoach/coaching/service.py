"""What the coaching routes reach through ``Services.coach``: the library, its bundles and the chips."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from upcoach.coaching.bundle import BundleBuilder, SigningKey, load_or_create_signing_key
from upcoach.coaching.chips import ChipService
from upcoach.coaching.chips_ahead import ChipsAhead
from upcoach.coaching.library import load_builtin
from upcoach.coaching.strategies import StrategyRepository
from upcoach.config import Settings
from upcoach.llm.base import Backend
from upcoach.storage.database import Database


@dataclass
class Coach:
    strategies: StrategyRepository
    bundles: BundleBuilder
    chips: ChipService
    signing_key: SigningKey
    # Who writes the chips: the local model (in this process, or the engine process's, llm/engine_chips.py).
    # create_app sets it, with the chips computed ahead after each coaching answer.
    chips_backend: Callable[[], Backend | None] = lambda: None
    ahead: ChipsAhead | None = None


async def start_coach(settings: Settings, db: Database) -> Coach:
    """Publish the shipped library into the database (a no-op when this version is already there) and load the
    bundle signing key."""
    strategies = StrategyRepository(db)
    await strategies.publish(load_builtin())
    configured = settings.bundle_signing_key.get_secret_value() if settings.bundle_signing_key else None
    key = load_or_create_signing_key(configured, settings.data_dir)
    return Coach(strategies, BundleBuilder(strategies, key), ChipService(strategies, settings.chips_budget_ms), key)
