"""create_app(settings): the FastAPI application and the lifespan that wires engines, storage and routes."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from upcoach.api import errors as api_errors
from upcoach.api.audit_routes import router as audit_router
from upcoach.api.coach_routes import router as coach_router
from upcoach.api.completion_routes import router as completion_router
from upcoach.api.deps import CHAT_ROLES, caller
from upcoach.api.device_routes import router as device_router
from upcoach.api.embedding_routes import router as embedding_router
from upcoach.api.experiment_routes import router as experiment_router
from upcoach.api.feedback_routes import router as feedback_router
from upcoach.api.health import router as health_router
from upcoach.api.hybrid_routes import records_router
from upcoach.api.hybrid_routes import router as hybrid_router
from upcoach.api.idempotency import Idempotency
from upcoach.api.journal_routes import router as journal_router
from upcoach.api.limits import BodySizeLimit
from upcoach.api.model_routes import router as model_router
from upcoach.api.openai_routes import router as openai_router
from upcoach.api.privacy_routes import router as privacy_router
from upcoach.api.security_routes import router as security_router
from upcoach.api.token_routes import router as token_router
from upcoach.coaching.chips_ahead import ChipsAhead
from upcoach.coaching.journal import Journal
from upcoach.coaching.ratings import Ratings
from upcoach.coaching.service import Coach, start_coach
from upcoach.config import Settings
from upcoach.devices.wiring import wire_devices
from upcoach.errors import LocalUnavailable, UpcoachError
from upcoach.experiments.service import Experiments
from upcoach.llm.base import Backend
from upcoach.llm.engine_chips import EngineChips
from upcoach.llm.llamacpp import EngineConfig, LlamaCppEngine
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.llm.pool import BackendPool
from upcoach.modelstore.catalog import model_id_for
from upcoach.modelstore.crypto import model_key_provider
from upcoach.modelstore.fetch import resolve_model
from upcoach.modelstore.manager import ModelManager, engine_config_for
from upcoach.modelstore.recovery import recover as recover_models
from upcoach.modelstore.registry import JobRepository, ModelRegistry
from upcoach.modelstore.signing import ManifestSigner
from upcoach.modelstore.store import ModelStore
from upcoach.modelstore.swap import Loaded, SwappableBackend
from upcoach.observability import tracing
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.observability.http import RequestObservability
from upcoach.observability.metrics import Metrics
from upcoach.observability.records import RecordWriter
from upcoach.observability.spool import Spool, claim_folder
from upcoach.observability.version import build_labels
from upcoach.privacy.grants import Grants
from upcoach.privacy.retention import RetentionJob
from upcoach.privacy.rights import DataRights
from upcoach.privacy.settings import PrivacyService
from upcoach.routing.breaker import MemoryBreakerStore, RedisBreakerStore
from upcoach.routing.factory import build_hybrid_engine
from upcoach.security.acting import Acting
from upcoach.security.auth import Authenticator, announce_auth_mode, require
from upcoach.security.keys import ApiKeys, Role
from upcoach.security.limits import TokenBucketLimiter
from upcoach.security.refusals import RefusalLog
from upcoach.security.vault import UserKeyVault, master_key_from_settings
from upcoach.services import Services
from upcoach.shutdown import Drain, DrainRequests
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.experiments import ExperimentRepository
from upcoach.storage.feedback import FeedbackRepository
from upcoach.storage.fences import Fences
from upcoach.storage.grants import GrantRepository
from upcoach.storage.journal import JournalRepository
from upcoach.storage.keys import ApiKeyRepository
from upcoach.storage.requests import RequestRepository
from upcoach.web.routes import install as install_dashboard
from upcoach.web.routes import share_through_redis

log = logging.getLogger(__name__)


def engine_config(settings: Settings) -> EngineConfig:
    """Resolve the configured model to a file (it must already be fetched) and build the engine's config."""
    path = resolve_model(settings.local_model, settings.models_dir, fetch_missing=False)
    return engine_config_for(settings, path, model_id_for(settings.local_model))


def _redis(settings: Settings) -> object | None:
    if not settings.redis_url:
        return None
    import redis.asyncio as aioredis

    from upcoach.storage.batched_redis import BatchedRedis

    # A blocking pool: under bursts callers wait for a connection instead of failing with "too many connections";
    # the client pipelines concurrent requests' commands together (storage/batched_redis.py), so a burst needs a
    # few connections, not one per command in flight.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=64, timeout=2, socket_timeout=1, socket_connect_timeout=1
    )
    return BatchedRedis(connection_pool=pool)


def _register_core_rights(
    rights: DataRights, privacy: PrivacyService, requests: RequestRepository, writer: RecordWriter
) -> None:
    """The data this service itself holds about a user; other areas register theirs next to this call."""

    async def export_settings(user_id: str) -> dict[str, object]:
        current = await privacy.get(user_id)
        history = await privacy.history(user_id)
        return {"current": {**current.editable(), "version": current.version, "updated_at": current.updated_at},
                "history": [asdict(version) for version in history]}  # fmt: skip

    async def export_records(user_id: str) -> list[dict[str, object]]:
        return [asdict(record) for record in await requests.all_for_user(user_id)]

    async def export_audit(user_id: str) -> list[dict[str, object]]:
        return [event.to_json() for event in await privacy.repository.audit_about(user_id)]

    rights.register("settings", export_settings, privacy.erase)

    async def erase_records(user_id: str) -> int:
        # The fence is already up (DataRights.erase): rows queued or spooled here go, then the stored ones.
        writer.purge(user_id)
        return await requests.delete_for_user(user_id)

    rights.register("requestRecords", export_records, erase_records)
    # Exported, never erased: the trail is HMAC-chained (see privacy/rights.py).
    rights.register("auditEvents", export_audit)


def _pool(settings: Settings) -> BackendPool | None:
    if not settings.pool_urls:
        return None
    members = [
        OpenAICompatBackend(
            name=f"pool-{i}",
            base_url=url,
            model=settings.pool_model,
            api_key=settings.pool_api_key,
            kind="pool",
            first_token_timeout=settings.pool_first_token_timeout,
            total_timeout=settings.pool_total_timeout,
            max_inflight=settings.pool_max_inflight,
        )
        for i, url in enumerate(settings.pool_urls)
    ]
    return BackendPool("pool", members, health_interval=settings.pool_health_interval)


def _engine_pool(settings: Settings, model_id: str) -> BackendPool | None:
    """The local model as a worker of ``upcoach serve --workers N`` reaches it: the engine process (engine_app.py)
    on its Unix socket, a one-member pool so a dead or restarting engine is probed back into rotation."""
    if settings.engine_socket is None:
        return None
    member = OpenAICompatBackend(
        name="engine", base_url="http://engine/v1", model=model_id, kind="pool",
        first_token_timeout=settings.pool_first_token_timeout, total_timeout=settings.pool_total_timeout,
        max_inflight=settings.pool_max_inflight, socket_path=str(settings.engine_socket),
    )  # fmt: skip
    return BackendPool("local", [member], health_interval=settings.pool_health_interval)


def _wire_journal_ratings_experiments(services: Services, db: Database, settings: Settings) -> None:
    """Voice journal, answer ratings and A/B experiments (#8 part B), their data registered for export/erasure."""
    vault = UserKeyVault(db, master_key_from_settings(settings))
    # The journal asks for the local backend at each entry: it may still be loading, or gone (pending insight).
    services.journal = Journal(
        JournalRepository(db), vault, lambda: services.local, guard=services.hybrid.guard,
        insight_timeout=settings.journal_insight_timeout,
    )  # fmt: skip
    services.ratings = Ratings(FeedbackRepository(db), services.requests, vault, services.metrics)

    async def analytics_opt_in(user_id: str) -> bool:
        # Fail closed: without the privacy service nobody counts as opted in, so nothing is stored.
        privacy = services.privacy
        return privacy is not None and bool((await privacy.get(user_id)).analytics_opt_in)

    experiments = ExperimentRepository(db)
    services.experiments = Experiments(
        experiments, analytics_opt_in, epsilon=settings.experiments_dp_epsilon,
        min_group_size=settings.experiments_min_group_size,
    )  # fmt: skip
    if services.rights is not None:
        services.rights.register("journalEntries", services.journal.export, services.journal.erase)
        services.rights.register("answerRatings", services.ratings.export, services.ratings.erase)
        services.rights.register("experiments", experiments.export_for_user, experiments.delete_for_user)


def _wire_chips(
    services: Services, coach: Coach, settings: Settings, redis: object | None, engine_pool: BackendPool | None,
    stack: AsyncExitStack,
) -> None:  # fmt: skip
    """Who writes chips (the model in this process, or the engine process's over its socket), and the chips
    computed ahead after every coaching answer (shared through Redis when several workers may be asked)."""
    chips_backend: Callable[[], Backend | None] = lambda: services.local  # noqa: E731
    if engine_pool is not None and settings.engine_socket is not None:
        engine_chips = EngineChips(engine_pool, str(settings.engine_socket))
        stack.push_async_callback(engine_chips.aclose)
        chips_backend = lambda: engine_chips  # noqa: E731
    coach.chips_backend = chips_backend
    if settings.chips_ahead:
        ahead = ChipsAhead(coach.chips, chips_backend, ttl_seconds=settings.chips_ahead_ttl_seconds,
                           redis=redis if settings.workers > 1 else None)  # fmt: skip
        stack.push_async_callback(ahead.aclose)
        coach.ahead = ahead
        services.hybrid.on_answer = lambda request, outcome: ahead.answered(
            request.user_id, request.messages, outcome.text
        )


async def _start_configured(engine: LlamaCppEngine, name: str) -> Loaded:
    await engine.start()
    if not engine.ready:
        reason = (await engine.health()).reason
        await engine.stop()
        raise LocalUnavailable(reason)
    return Loaded(engine, None, name)


async def _load_local(services: Services, backend: SwappableBackend, load: Awaitable[Loaded]) -> None:
    """Load the serving model (the registry's active version, else the configured file) into the backend."""
    try:
        loaded = await load
    except UpcoachError as exc:
        log.error("local model unavailable: %s", exc.message)
        services.local_problem = backend.problem = exc.message
        return
    await backend.swap(loaded)
    services.local = backend
    services.local_model_id = loaded.name
    services.local_problem = None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    drain = Drain(settings.shutdown_grace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        async with AsyncExitStack() as stack:
            stack.enter_context(drain.listen())  # first in, last out: a signal during shutdown still drains
            stack.callback(tracing.shutdown_tracing)  # last out: spans of the shutdown itself are flushed too
            db = Database(settings.effective_database_url)
            stack.push_async_callback(db.dispose)
            await db.migrate()
            announce_auth_mode(settings)
            audit_key = audit_key_from_settings(settings)
            assert audit_key is not None  # created when missing
            audit = AuditLog(AuditRepository(db), audit_key)
            app.state.audit_log = audit
            spool_folder, claim = claim_folder(settings.data_dir / "spool", settings.workers)
            if claim is not None:
                stack.callback(os.close, claim)
            refusals = RefusalLog(audit, spool=spool_folder / "refusals.jsonl")
            await refusals.start()
            stack.push_async_callback(refusals.stop)
            app.state.refusals = refusals
            redis = _redis(settings)
            if redis is not None:
                stack.push_async_callback(redis.aclose)  # type: ignore[attr-defined]
                share_through_redis(app, redis)
            app.state.authenticator = Authenticator(
                settings, ApiKeys(ApiKeyRepository(db), audit, redis=redis), on_failure=refusals.record, redis=redis
            )
            repository = RequestRepository(db)
            metrics = Metrics()
            metrics.build_info.labels(**build_labels(await db.schema_revision())).set(1)
            writer = RecordWriter(repository, Spool(spool_folder), metrics)
            await writer.start()
            stack.push_async_callback(writer.stop)

            # Model versions (#6): the registry's active version serves if there is one, else the configured file;
            # either way behind a SwappableBackend, so updates and rollbacks swap it without failing a request.
            registry = ModelRegistry(db)
            model_store = ModelStore(settings, registry, model_key_provider(settings), audit)
            job_rows = JobRepository(db)
            if settings.workers == 1:  # with several workers `upcoach serve` did it once, before starting them
                await recover_models(db, settings.models_dir)  # what a killed process left half-done
            swappable = SwappableBackend()
            stack.push_async_callback(swappable.aclose)
            metrics.watch_local(lambda: swappable.info().details)
            active_version = await registry.active()
            engine: SwappableBackend | None = None
            local_problem = "local model disabled (UPCOACH_LOAD_MODEL=false)"
            local_model_id = model_id_for(settings.local_model)
            # With several workers the model is in the engine process; this worker reaches it over its socket.
            engine_pool = _engine_pool(settings, active_version.name if active_version else local_model_id)
            if engine_pool is not None and active_version is not None:
                local_model_id = active_version.name  # what the engine loaded
            # A pool in the "local" role replaces the in-process model; "beside" it takes the overflow.
            if (
                engine_pool is None
                and settings.load_model
                and not (settings.pool_urls and settings.pool_role == "local")
            ):
                if active_version is not None:
                    engine = swappable
                else:
                    try:
                        configured = LlamaCppEngine(engine_config(settings))
                        engine = swappable
                    except UpcoachError as exc:
                        local_problem = exc.message
                        log.error("local model unavailable: %s", exc.message)
            pool = _pool(settings)
            if pool is not None:
                await pool.start()
                stack.push_async_callback(pool.stop)
            if engine_pool is not None:
                # Probed once now: the engine may still be loading the model, and until it answers this worker
                # must not report ready nor send it requests.
                await engine_pool.check()
                await engine_pool.start()
                stack.push_async_callback(engine_pool.aclose)
            locals_: list[Backend] = [b for b in (engine, engine_pool, pool) if b is not None]
            store = RedisBreakerStore(redis) if redis is not None else MemoryBreakerStore()  # type: ignore[arg-type]
            privacy = PrivacyService(db, audit, settings, redis)
            fences = Fences(db)
            rights = DataRights(audit, audit_key, fences=fences)
            _register_core_rights(rights, privacy, repository, writer)
            grants = Grants(GrantRepository(db), audit)
            rights.register("coachGrants", grants.export, grants.erase)
            retention = RetentionJob(privacy.repository, settings.default_retention_days,
                                     settings.retention_interval_seconds, fences=fences,
                                     fence_days=settings.erasure_fence_days)  # fmt: skip
            await retention.start()
            stack.push_async_callback(retention.stop)

            coach = await start_coach(settings, db)  # strategies library, bundle key, chips (#8 part A)
            hybrid = build_hybrid_engine(
                settings, local=locals_, metrics=metrics, record=writer.submit, audit=audit, privacy=privacy.get,
                breaker_store=store, redis=redis, strategies=coach.strategies,
            )  # fmt: skip
            stack.push_async_callback(hybrid.aclose)
            services = Services(
                settings=settings,
                db=db,
                requests=repository,
                metrics=metrics,
                hybrid=hybrid,
                local_model_id=local_model_id,
                local=engine_pool or (pool if engine is None else None),
                local_problem=None if engine is None and (engine_pool or pool) is not None else local_problem,
                audit=audit,
                limiter=TokenBucketLimiter(settings.rate_limit_per_minute / 60, settings.rate_limit_burst, redis),
                records=writer,
                privacy=privacy,
                rights=rights,
                grants=grants,
                acting=Acting(audit, grants.allows),
            )
            services.models = ModelManager(
                settings, registry, model_store, swappable, audit, job_rows=job_rows,
                on_swap=lambda loaded: setattr(services, "local_model_id", loaded.name),
            )  # fmt: skip
            stack.push_async_callback(services.models.aclose)
            services.model_signer = ManifestSigner.from_settings(settings)
            _wire_journal_ratings_experiments(services, db, settings)
            services.coach = coach
            _wire_chips(services, coach, settings, redis, engine_pool, stack)
            wire_devices(services, ApiKeys(ApiKeyRepository(db), audit), registry)  # devices and sync (#19)
            app.state.services = services
            if engine is not None:
                # Load in the background: /healthz answers at once, /readyz turns 200 when the model is in.
                services.local_problem = "local model is loading"
                swappable.problem = "local model is loading"
                load = (
                    services.models.load(active_version.id, active_version.name)
                    if active_version is not None
                    else _start_configured(configured, model_id_for(settings.local_model))
                )
                loader = asyncio.create_task(_load_local(services, swappable, load))
                stack.push_async_callback(_await, loader)
            yield

    app = FastAPI(title="UpCoach AI", version="0.1.0", lifespan=lifespan)
    app.state.drain = drain
    tracing.configure_tracing(settings.tracing)
    api_errors.install(app)
    chat_caller = [Depends(caller(*CHAT_ROLES))]
    app.include_router(health_router)
    app.include_router(openai_router, dependencies=chat_caller)
    app.include_router(token_router, dependencies=chat_caller)
    app.include_router(embedding_router, dependencies=chat_caller)
    app.include_router(completion_router, dependencies=chat_caller)
    app.include_router(hybrid_router, dependencies=chat_caller)
    app.include_router(records_router)
    app.include_router(security_router, dependencies=chat_caller)
    app.include_router(coach_router, dependencies=chat_caller)
    app.include_router(audit_router)
    app.include_router(model_router)
    app.include_router(journal_router)
    app.include_router(feedback_router)
    app.include_router(experiment_router)
    app.include_router(privacy_router)
    app.include_router(device_router)
    install_dashboard(app, settings)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require(Role.admin, Role.auditor))])
    async def metrics(request: Request) -> Response:
        services: Services = request.app.state.services
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(Idempotency)  # inside BodySizeLimit: it reads whole bodies that the limit has bounded
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(DrainRequests, drain=drain)  # inside the observability: a request ended by shutdown counts
    app.add_middleware(RequestObservability)  # request id and status counts for everything inside it
    if settings.trusted_proxies:
        # Outermost, so every part of the app sees the client a trusted proxy forwarded for; from any other peer
        # X-Forwarded-For is ignored (an attacker would otherwise pick the address their refusals count against).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app


async def _await(task: asyncio.Task[None]) -> None:
    await task
