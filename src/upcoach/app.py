"""create_app(settings): the FastAPI application and the lifespan that wires engine, storage and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from upcoach.api import errors as api_errors
from upcoach.api.health import router as health_router
from upcoach.api.limits import BodySizeLimit
from upcoach.api.openai_routes import router as openai_router
from upcoach.config import Settings
from upcoach.errors import UpcoachError
from upcoach.llm.llamacpp import EngineConfig, LlamaCppEngine
from upcoach.modelstore.catalog import model_id_for
from upcoach.modelstore.fetch import resolve_model
from upcoach.services import Services
from upcoach.storage.database import Database

log = logging.getLogger(__name__)


def engine_config(settings: Settings) -> EngineConfig:
    """Resolve the configured model to a file (it must already be fetched) and build the engine's config."""
    path = resolve_model(settings.local_model, settings.models_dir, fetch_missing=False)
    return EngineConfig(
        model_path=path,
        model_id=model_id_for(settings.local_model),
        threads=settings.threads,
        context_size=settings.context_size,
        batch_size=settings.batch_size,
        queue_depth=settings.queue_depth,
        prefix_cache_bytes=settings.prefix_cache_mb << 20,
        prefix_min_tokens=settings.prefix_cache_min_tokens,
        default_max_tokens=settings.default_max_tokens,
    )


async def _load_local(services: Services, engine: LlamaCppEngine) -> None:
    await engine.start()
    if engine.ready:
        services.local = engine
        services.local_problem = None
    else:
        services.local_problem = (await engine.health()).reason


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        services = Services(settings=settings, db=db, local_model_id=model_id_for(settings.local_model))
        app.state.services = services
        engine: LlamaCppEngine | None = None
        loader: asyncio.Task[None] | None = None
        if settings.load_model:
            try:
                engine = LlamaCppEngine(engine_config(settings))
            except UpcoachError as exc:
                services.local_problem = exc.message
                log.error("local model unavailable: %s", exc.message)
            else:
                # Load in the background: /healthz answers at once, /readyz turns 200 when the model is in.
                loader = asyncio.create_task(_load_local(services, engine))
        else:
            services.local_problem = "local model disabled (UPCOACH_LOAD_MODEL=false)"
        try:
            yield
        finally:
            if loader is not None:
                await loader
            if engine is not None:
                await engine.stop()
            await db.dispose()

    app = FastAPI(title="UpCoach AI", version="0.1.0", lifespan=lifespan)
    api_errors.install(app)
    app.include_router(health_router)
    app.include_router(openai_router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
