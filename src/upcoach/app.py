"""create_app(settings): the FastAPI application and the lifespan that wires engines, storage and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from upcoach.api import errors as api_errors
from upcoach.api.audit_routes import router as audit_router
from upcoach.api.deps import CHAT_ROLES, caller
from upcoach.api.health import router as health_router
from upcoach.api.hybrid_routes import router as hybrid_router
from upcoach.api.limits import BodySizeLimit
from upcoach.api.openai_routes import router as openai_router
from upcoach.api.security_routes import router as security_router
from upcoach.config import Settings
from upcoach.errors import UpcoachError
from upcoach.llm.base import Backend
from upcoach.llm.llamacpp import EngineConfig, LlamaCppEngine
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.llm.pool import BackendPool
from upcoach.modelstore.catalog import model_id_for
from upcoach.modelstore.fetch import resolve_model
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.observability.metrics import Metrics
from upcoach.observability.records import RecordWriter
from upcoach.routing.breaker import CircuitBreaker, MemoryBreakerStore, RedisBreakerStore, breaker_config_from_settings
from upcoach.routing.costs import CloudBudget, PriceTable
from upcoach.routing.engine import HybridEngine, HybridRequest
from upcoach.routing.policy import PolicyConfig
from upcoach.security.auth import Authenticator, announce_auth_mode, audit_refusals, require
from upcoach.security.guard import Guard
from upcoach.security.keys import ApiKeys, Role
from upcoach.security.limits import TokenBucketLimiter
from upcoach.services import Services
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.keys import ApiKeyRepository
from upcoach.storage.requests import RequestRepository

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


def _redis(settings: Settings) -> object | None:
    if not settings.redis_url:
        return None
    import redis.asyncio as aioredis

    # A blocking pool: under bursts callers wait for a connection instead of failing with "too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=64, timeout=2, socket_timeout=1, socket_connect_timeout=1
    )
    return aioredis.Redis(connection_pool=pool)


def _cloud(settings: Settings) -> OpenAICompatBackend | None:
    if not settings.cloud_base_url:
        return None
    return OpenAICompatBackend(
        name="cloud",
        base_url=settings.cloud_base_url,
        model=settings.cloud_model,
        api_key=settings.cloud_api_key,
        kind="cloud",
        connect_timeout=settings.cloud_connect_timeout,
        first_token_timeout=settings.cloud_first_token_timeout,
        total_timeout=settings.cloud_total_timeout,
    )


def _pool(settings: Settings) -> BackendPool | None:
    if not settings.pool_urls:
        return None
    members = [
        OpenAICompatBackend(
            name=f"pool-{i}", base_url=url, model=settings.pool_model, api_key=settings.pool_api_key, kind="pool"
        )
        for i, url in enumerate(settings.pool_urls)
    ]
    return BackendPool("pool", members, health_interval=settings.pool_health_interval)


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
        async with AsyncExitStack() as stack:
            db = Database(settings.effective_database_url)
            stack.push_async_callback(db.dispose)
            await db.migrate()
            announce_auth_mode(settings)
            audit = AuditLog(AuditRepository(db), audit_key_from_settings(settings))
            app.state.audit_log = audit
            app.state.authenticator = Authenticator(
                settings, ApiKeys(ApiKeyRepository(db), audit), on_failure=audit_refusals(audit)
            )
            repository = RequestRepository(db)
            writer = RecordWriter(repository)
            await writer.start()
            stack.push_async_callback(writer.stop)
            redis = _redis(settings)
            if redis is not None:
                stack.push_async_callback(redis.aclose)  # type: ignore[attr-defined]
            metrics = Metrics()

            engine: LlamaCppEngine | None = None
            local_problem = "local model disabled (UPCOACH_LOAD_MODEL=false)"
            # A pool in the "local" role replaces the in-process model; "beside" it takes the overflow.
            if settings.load_model and not (settings.pool_urls and settings.pool_role == "local"):
                try:
                    engine = LlamaCppEngine(engine_config(settings))
                except UpcoachError as exc:
                    local_problem = exc.message
                    log.error("local model unavailable: %s", exc.message)
            pool = _pool(settings)
            if pool is not None:
                await pool.start()
                stack.push_async_callback(pool.stop)
            locals_: list[Backend] = [b for b in (engine, pool) if b is not None]
            cloud = _cloud(settings)
            if cloud is not None:
                stack.push_async_callback(cloud.aclose)
            store = RedisBreakerStore(redis) if redis is not None else MemoryBreakerStore()  # type: ignore[arg-type]
            breaker = CircuitBreaker("cloud", breaker_config_from_settings(settings), store) if cloud else None

            async def audit_flags(request: HybridRequest, flags: list[str]) -> None:
                action = "request.blocked" if "prompt_injection_blocked" in flags else "request.flagged"
                await audit.append(
                    request.user_id or "anonymous", "user", action, target=request.request_id,
                    details={"flags": flags, "endpoint": request.endpoint},
                )  # fmt: skip

            hybrid = HybridEngine(
                local=locals_,
                cloud=cloud,
                cloud_breaker=breaker,
                cloud_model=settings.cloud_model,
                prices=PriceTable.from_settings(settings),
                budget=CloudBudget(settings.cloud_budget_usd_per_day, redis),
                policy=PolicyConfig(settings.complexity_threshold, redact_private=True),
                metrics=metrics,
                record=writer.submit,
                guard=Guard(),
                on_flag=audit_flags,
            )
            services = Services(
                settings=settings,
                db=db,
                requests=repository,
                metrics=metrics,
                hybrid=hybrid,
                local_model_id=model_id_for(settings.local_model),
                local=pool if engine is None else None,
                local_problem=None if engine is None and pool is not None else local_problem,
                audit=audit,
                limiter=TokenBucketLimiter(settings.rate_limit_per_minute / 60, settings.rate_limit_burst, redis),
            )
            app.state.services = services
            if engine is not None:
                # Load in the background: /healthz answers at once, /readyz turns 200 when the model is in.
                services.local_problem = "local model is loading"
                loader = asyncio.create_task(_load_local(services, engine))
                stack.push_async_callback(engine.stop)
                stack.push_async_callback(_await, loader)
            yield

    app = FastAPI(title="UpCoach AI", version="0.1.0", lifespan=lifespan)
    api_errors.install(app)
    chat_caller = [Depends(caller(*CHAT_ROLES))]
    app.include_router(health_router)
    app.include_router(openai_router, dependencies=chat_caller)
    app.include_router(hybrid_router, dependencies=chat_caller)
    app.include_router(security_router, dependencies=chat_caller)
    app.include_router(audit_router)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require(Role.admin, Role.auditor))])
    async def metrics(request: Request) -> Response:
        services: Services = request.app.state.services
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


async def _await(task: asyncio.Task[None]) -> None:
    await task
