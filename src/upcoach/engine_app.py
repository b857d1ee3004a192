"""The engine process: the local model, loaded once, served to the API workers over a Unix socket.

With ``upcoach serve --workers N`` (N > 1) the model would otherwise be loaded N times (N copies of its weights and
KV cache, N decode loops fighting for the same cores). Instead one process holds it, like vLLM's engine core behind
its API servers, and speaks the OpenAI chat-completions wire (streamed and not) on a Unix socket that only this
user can reach. Every API worker sees it as a one-member pool (llm/pool.py), so the routing, guard, redaction and
records all stay in the workers and this process only generates. ``GET /v1/models`` answers 200 once the model is
in (the pool's health probe); until then 503.

The model comes from the same place as in a single process: the registry's active version, else the configured
file (it must already be fetched: ``upcoach serve`` fetches it before starting anything).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from upcoach.api import errors as api_errors
from upcoach.api.disconnect import unless_disconnected
from upcoach.api.errors import error_body
from upcoach.api.openai_schemas import ChatCompletionRequest, chunk_dict, completion_dict, new_completion_id
from upcoach.config import Settings
from upcoach.errors import BackendError, LocalUnavailable, UpcoachError
from upcoach.llm.base import ChatRequest, Chunk, collect
from upcoach.llm.engine_chips import GENERATE_PATH, GenerateRequest, generated_body
from upcoach.llm.llamacpp import LlamaCppEngine
from upcoach.modelstore.catalog import model_id_for
from upcoach.modelstore.crypto import model_key_provider
from upcoach.modelstore.fetch import resolve_model
from upcoach.modelstore.manager import ModelManager, engine_config_for
from upcoach.modelstore.registry import JobRepository, ModelRegistry
from upcoach.modelstore.store import ModelStore
from upcoach.modelstore.swap import Loaded, SwappableBackend
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database

log = logging.getLogger(__name__)


async def load_local_model(settings: Settings, stack: AsyncExitStack) -> Loaded:
    """The serving model, started: the registry's active version if there is one, else the configured file."""
    db = Database(settings.effective_database_url)
    stack.push_async_callback(db.dispose)
    audit_key = audit_key_from_settings(settings)
    assert audit_key is not None  # created when missing
    audit = AuditLog(AuditRepository(db), audit_key)
    registry = ModelRegistry(db)
    active = await registry.active()
    if active is not None:
        store = ModelStore(settings, registry, model_key_provider(settings), audit)
        manager = ModelManager(settings, registry, store, SwappableBackend(), audit, job_rows=JobRepository(db))
        return await manager.load(active.id, active.name)
    path = resolve_model(settings.local_model, settings.models_dir, fetch_missing=False)
    engine = LlamaCppEngine(engine_config_for(settings, path, model_id_for(settings.local_model)))
    await engine.start()
    if not engine.ready:
        reason = (await engine.health()).reason
        await engine.stop()
        raise LocalUnavailable(reason)
    return Loaded(engine, None, model_id_for(settings.local_model))


def _internal(body: ChatCompletionRequest) -> ChatRequest:
    messages = body.messages_internal()
    continuation = ""
    if len(messages) > 1 and messages[-1].role == "assistant":
        # A trailing assistant message is a prefill (OpenAICompatBackend sends a continuation that way).
        continuation, messages = messages[-1].content, messages[:-1]
    return ChatRequest(messages, body.params(), new_completion_id(), continuation=continuation, user_id=body.user)


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _sse(chunks: AsyncIterator[Chunk], first: Chunk, completion_id: str, model: str) -> AsyncIterator[bytes]:
    created = int(time.time())
    yield _event(chunk_dict(completion_id, model, created, delta={"role": "assistant", "content": ""}))
    try:
        chunk: Chunk | None = first
        while chunk is not None:
            if chunk.final is not None:
                final = chunk.final
                yield _event(chunk_dict(completion_id, model, created, finish_reason=final.finish_reason))
                yield _event(chunk_dict(completion_id, model, created, usage=final.usage, with_choice=False))
                break
            if chunk.text or chunk.logprobs:  # every choice (n > 1) under its index, with its log probabilities
                yield _event(chunk_dict(completion_id, model, created, delta={"content": chunk.text},
                                        index=chunk.index, logprobs=chunk.logprobs or None))  # fmt: skip
            if chunk.finish is not None:
                yield _event(chunk_dict(completion_id, model, created, finish_reason=chunk.finish, index=chunk.index))
            chunk = await anext(chunks, None)
    except UpcoachError as exc:
        # The 200 is on the wire already: an error event, which the workers' client raises as the peer's error.
        yield _event(error_body(exc.message, type_=exc.type, code=exc.code, param=exc.param))
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


def create_engine_app(settings: Settings) -> FastAPI:
    """The engine process's app (served by ``upcoach.workers`` on a Unix socket)."""
    backend = SwappableBackend()
    backend.problem = "local model is loading"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(backend.aclose)
            loaded = await load_local_model(settings, stack)
            await backend.swap(loaded)
            app.state.model_id = loaded.name
            log.info("engine process: %s loaded", loaded.name)
            yield

    app = FastAPI(title="UpCoach AI engine", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    api_errors.install(app)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        health = await backend.health()
        if not health.ok:
            return JSONResponse(error_body(health.reason or "not ready", type_="server_error", code="unavailable"),
                                status_code=503)  # fmt: skip
        model_id = request.app.state.model_id
        return JSONResponse({"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "upcoach"}]})

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        chat = _internal(body)
        model = request.app.state.model_id
        if not body.stream:
            completion = await collect(backend.stream(chat))
            if completion is None:
                raise BackendError("the local model ended without a result", backend="engine")
            return JSONResponse(
                completion_dict(chat.request_id, model, completion.text, completion.finish_reason, completion.usage)
            )
        chunks = backend.stream(chat)
        # The first step runs before the 200: a full queue or a failed start is still an honest status code.
        try:
            first = await anext(chunks, None)
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        if first is None:
            raise BackendError("the local model ended without a result", backend="engine")
        return StreamingResponse(
            _sse(chunks, first, chat.request_id, model),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @app.post(GENERATE_PATH)
    async def generate(body: GenerateRequest, request: Request) -> Response:
        """Chips for the API workers: grammar, branches and priority, which the OpenAI wire cannot carry."""
        completion = await unless_disconnected(request, collect(backend.stream(body.internal())))
        if completion is None:
            raise BackendError("the local model ended without a result", backend="engine")
        return JSONResponse(generated_body(completion))

    return app
