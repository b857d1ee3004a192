"""The model lifecycle the admin API drives: download jobs with progress, update with a smoke test and a
zero-downtime swap, rollback, delete, and the version A/B test.

Every change runs under one lock, so an update, a rollback and an A/B promotion never interleave; downloads do not
take it (they only add files). A new version never serves before it has loaded in an engine of its own and given a
sane answer to a fixed prompt; only then is it marked active and swapped in (``swap.SwappableBackend``), and the
previous version stays installed for a rollback. Each change is written to the audit trail with the admin as actor.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from upcoach.config import Settings, default_parallel
from upcoach.errors import (
    InvalidRequest,
    ModelNotFound,
    ModelStateConflict,
    SmokeTestFailed,
    UpcoachError,
)
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.llamacpp import EngineConfig, LlamaCppEngine
from upcoach.modelstore.catalog import CATALOG
from upcoach.modelstore.evaluation import sanity_problems
from upcoach.modelstore.registry import model_id as registry_id
from upcoach.modelstore.swap import Loaded, SwappableBackend
from upcoach.modelstore.versions_ab import VersionExperiment
from upcoach.observability.audit import AuditLog

log = logging.getLogger(__name__)

SMOKE_PROMPT = (
    ChatMessage("system", "You are a helpful, concise assistant."),
    ChatMessage("user", "Say hello to a new client in one short sentence."),
)
SMOKE_SEED = 1
# Progress samples closer together than this are merged: the rate is an average, not a jitter.
RATE_SAMPLE_SECONDS = 0.5
RATE_ALPHA = 0.3
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")

JobKind = Literal["download", "update"]
JobStatus = Literal["queued", "downloading", "smoke-testing", "swapping", "done", "failed"]


def engine_config_for(settings: Settings, path: Path, model_id: str) -> EngineConfig:
    return EngineConfig(
        model_path=path,
        model_id=model_id,
        threads=settings.threads,
        context_size=settings.context_size,
        batch_size=settings.batch_size,
        queue_depth=settings.queue_depth,
        parallel=settings.parallel or default_parallel(settings.threads, settings.context_size),
        prefill_chunk=settings.prefill_chunk,
        prefix_cache_bytes=settings.prefix_cache_mb << 20,
        prefix_min_tokens=settings.prefix_cache_min_tokens,
        default_max_tokens=settings.default_max_tokens,
    )


@dataclass
class Job:
    id: str
    kind: JobKind
    source: str
    actor: str
    model_id: str | None = None
    status: JobStatus = "queued"
    bytes_done: int = 0
    bytes_total: int | None = None
    rate: float | None = None
    error: str | None = None
    error_code: str | None = None
    result: dict[str, Any] | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _sample: tuple[float, int] | None = None

    def progress(self, done: int, total: int | None) -> None:
        """Fed by the store while bytes arrive (possibly from a worker thread: plain assignments only)."""
        now = time.monotonic()
        if self._sample is None:
            self._sample = (now, done)
        else:
            then, before = self._sample
            if now - then >= RATE_SAMPLE_SECONDS:
                instant = max(0, done - before) / (now - then)
                self.rate = instant if self.rate is None else (1 - RATE_ALPHA) * self.rate + RATE_ALPHA * instant
                self._sample = (now, done)
        self.bytes_done = done
        self.bytes_total = total if total else self.bytes_total
        self.updated_at = datetime.now(UTC)

    @property
    def eta_seconds(self) -> float | None:
        if self.status != "downloading" or not self.rate or not self.bytes_total:
            return None
        return max(0.0, (self.bytes_total - self.bytes_done) / self.rate)

    def set(self, status: JobStatus) -> None:
        self.status = status
        self.updated_at = datetime.now(UTC)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "modelId": self.model_id,
            "status": self.status,
            "bytesDone": self.bytes_done,
            "bytesTotal": self.bytes_total,
            "rateBytesPerSec": round(self.rate, 1) if self.rate is not None else None,
            "etaSeconds": round(eta, 1) if (eta := self.eta_seconds) is not None else None,
            "error": self.error,
            "errorCode": self.error_code,
            "result": self.result,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class PullSpec:
    """What to fetch: a catalog model id or an http(s) URL, with the optional name, version and sha256."""

    source: str
    name: str | None = None
    version: str | None = None
    sha256: str | None = None

    @classmethod
    def parse(
        cls, *, source: str | None, model_id: str | None, name: str | None, version: str | None, sha256: str | None
    ) -> PullSpec:
        if (source is None) == (model_id is None):
            raise InvalidRequest("give exactly one of source (an http(s) URL) and modelId", param="source")
        if sha256 is not None and not SHA256_PATTERN.fullmatch(sha256):
            raise InvalidRequest("sha256 must be 64 hexadecimal characters", param="sha256")
        # The registry checks them again in the job; checked here too, a bad name or version is a 400 at once.
        registry_id(name or "model", version or "0")
        if source is not None:
            if not re.match(r"https?://[^/\s]+", source):
                raise InvalidRequest("source must be an http:// or https:// URL", param="source")
            if sha256 is None:
                raise InvalidRequest("a URL source needs the file's sha256: it is checked before use", param="sha256")
            return cls(source, name, version, sha256.lower() if sha256 else None)
        assert model_id is not None
        if model_id not in CATALOG:
            raise ModelNotFound(f"unknown catalog model {model_id!r}; known: {', '.join(CATALOG)}", param="modelId")
        return cls(model_id, name or model_id, version, sha256.lower() if sha256 else None)


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        registry: Any,
        store: Any,
        backend: SwappableBackend,
        audit: AuditLog,
        *,
        job_rows: Any = None,
        on_swap: Callable[[Loaded], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.backend = backend
        self.audit = audit
        self._job_rows = job_rows
        self._on_swap = on_swap
        self._lock = asyncio.Lock()
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.experiment: VersionExperiment | None = None

    # ---- jobs --------------------------------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: job.created_at)

    async def job_views(self) -> list[dict[str, Any]]:
        """This process's jobs (live progress) and, from the table, earlier ones (end state only); newest first."""
        views = [job.to_json() for job in self._jobs.values()]
        if self._job_rows is not None:
            for row in await self._job_rows.list():
                if row.id not in self._jobs:
                    views.append(
                        {
                            "id": row.id, "kind": None, "source": row.source, "modelId": row.model_id,
                            "status": row.status, "bytesDone": row.bytes_done, "bytesTotal": row.bytes_total,
                            "rateBytesPerSec": None, "etaSeconds": None, "error": row.error, "errorCode": None,
                            "result": None, "createdAt": row.created_at.isoformat(),
                            "updatedAt": row.updated_at.isoformat(),
                        }
                    )  # fmt: skip
        return sorted(views, key=lambda view: str(view["createdAt"]), reverse=True)

    def job(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise ModelNotFound(f"no job {job_id!r}", param="id") from None

    async def _new_job(self, kind: JobKind, source: str, actor: str) -> Job:
        job_id = secrets.token_hex(16)
        if self._job_rows is not None:
            job_id = (await self._job_rows.create(source, status="running")).id
        return Job(job_id, kind, source, actor)

    async def _persist(self, job: Job) -> None:
        """The job's end state in the model_jobs table (live progress is in memory only: it changes too often)."""
        if self._job_rows is None:
            return
        try:
            await self._job_rows.update(
                job.id, model_id=job.model_id, status=job.status, bytes_done=job.bytes_done,
                bytes_total=job.bytes_total, error=job.error,
            )  # fmt: skip
        except Exception:
            log.exception("could not record the end of model job %s", job.id)

    def _spawn(self, job: Job, work: Callable[[Job], Any]) -> Job:
        self._jobs[job.id] = job

        async def run() -> None:
            try:
                await work(job)
                job.set("done")
            except UpcoachError as exc:
                job.error, job.error_code = exc.message, exc.code
                job.set("failed")
                log.warning("model %s job %s failed: %s", job.kind, job.id, exc.message)
            except Exception as exc:  # a job's failure is reported on the job, never lost in a task
                log.exception("model %s job %s failed", job.kind, job.id)
                # Not the exception's text: it can carry upstream details (addresses, bodies); the log has it.
                job.error = f"internal error ({type(exc).__name__}); see the server log"
                job.error_code = "internal_error"
                job.set("failed")
            await self._persist(job)

        task = asyncio.create_task(run(), name=f"model-{job.kind}-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def wait(self, job_id: str) -> Job:
        """Wait for a job's task (tests, the CLI)."""
        job = self.job(job_id)
        for task in list(self._tasks):
            if task.get_name().endswith(job_id):
                await asyncio.shield(task)
        return job

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pull(self, job: Job, spec: PullSpec) -> Any:
        job.set("downloading")
        await self.audit.append(
            job.actor, "admin", "model.download", target=spec.name or spec.source,
            details={"job": job.id, "phase": "started", "source": spec.source, "version": spec.version},
        )  # fmt: skip
        try:
            version = await self.store.pull(
                spec.source, name=spec.name, version=spec.version, sha256=spec.sha256, progress=job.progress
            )
        except UpcoachError as exc:
            await self.audit.append(
                job.actor, "admin", "model.download", target=spec.name or spec.source,
                details={"job": job.id, "phase": "failed", "code": exc.code},
            )  # fmt: skip
            raise
        job.model_id = version.id
        if version.size:
            job.bytes_total = job.bytes_total or version.size
            job.bytes_done = max(job.bytes_done, version.size)
        await self.audit.append(
            job.actor, "admin", "model.download", target=version.id,
            details={"job": job.id, "phase": "finished", "sha256": version.sha256, "size": version.size},
        )  # fmt: skip
        return version

    async def download(self, spec: PullSpec, actor: str) -> Job:
        job = await self._new_job("download", spec.source, actor)

        async def work(job: Job) -> None:
            await self._pull(job, spec)

        return self._spawn(job, work)

    async def plan_update(
        self, *, model_id: str | None, source: str | None, version: str | None, sha256: str | None
    ) -> tuple[str | None, PullSpec | None]:
        """What an update means: (an installed version to activate, None) or (None, what to fetch first).

        ``source``: a URL with a new version of the serving model. ``modelId``: ``name@version`` (installed);
        a name with ``version`` (installed, else fetched from the catalog under that version); a bare name (its
        active or newest ready version, else fetched from the catalog).
        """
        if (source is None) == (model_id is None):
            raise InvalidRequest("give exactly one of modelId and source", param="modelId")
        if source is not None:
            current = self.backend.current
            if current is None:
                raise InvalidRequest("no model is serving: update by modelId (a catalog model)", param="source")
            return None, PullSpec.parse(source=source, model_id=None, name=current.name, version=version,
                                        sha256=sha256)  # fmt: skip
        assert model_id is not None
        if "@" in model_id:
            return (await self.registry.get(model_id)).id, None
        if version is not None:
            installed = await self.registry.find(f"{model_id}@{version}")
        else:
            try:
                installed = await self.registry.resolve(model_id)
            except ModelNotFound:
                installed = None
        if installed is not None:
            return installed.id, None
        return None, PullSpec.parse(source=None, model_id=model_id, name=None, version=version, sha256=sha256)

    async def update(self, *, model_id: str | None, spec: PullSpec | None, actor: str) -> Job:
        """Start an update job: fetch (unless ``model_id`` is installed), smoke-test, activate, swap."""
        self._serving_here()
        if self._lock.locked():
            raise ModelStateConflict("another model change is running; wait for it to finish")
        if self.experiment is not None:
            raise ModelStateConflict("an A/B test is running: promote or stop it before updating")
        installed = None
        if model_id is not None:
            installed = await self.registry.resolve(model_id)
            if installed.status != "ready":
                raise ModelStateConflict(f"model {installed.id} is {installed.status}, not ready")
        job = await self._new_job("update", spec.source if spec else model_id or "", actor)

        async def work(job: Job) -> None:
            async with self._lock:
                version = installed if installed is not None else await self._pull(job, spec)  # type: ignore[arg-type]
                job.model_id = version.id
                job.result = await self._activate(version, actor, action="model.activate", job=job)

        return self._spawn(job, work)

    # ---- activation --------------------------------------------------------------------------------------------
    async def load(self, version_id: str, name: str) -> Loaded:
        """Start an engine on a stored version's plaintext (an in-memory file, released when the engine stops)."""
        stack = AsyncExitStack()
        try:
            path = await stack.enter_async_context(self.store.open_plaintext(version_id))
            engine = LlamaCppEngine(engine_config_for(self.settings, Path(path), name))
            await engine.start()
            if not engine.ready:
                reason = (await engine.health()).reason
                await engine.stop()
                raise SmokeTestFailed(f"{version_id} did not load: {reason}")
        except BaseException:
            await stack.aclose()
            raise
        return Loaded(engine, version_id, name, release=stack.aclose)

    async def smoke_test(self, loaded: Loaded) -> str:
        """Generate a few tokens from a fixed prompt; a version that cannot answer sanely never serves."""
        params = GenerationParams(max_tokens=self.settings.model_smoke_max_tokens, temperature=0.0, seed=SMOKE_SEED)
        completion = await loaded.engine.chat(ChatRequest(SMOKE_PROMPT, params, f"smoke-{loaded.version_id}"))
        problems = sanity_problems(completion.text)
        if problems:
            raise SmokeTestFailed(f"{loaded.version_id} failed its smoke test: {'; '.join(problems)}")
        return completion.text

    async def _load_checked(self, version: Any, job: Job | None = None) -> Loaded:
        if job is not None:
            job.set("smoke-testing")
        if version.status != "ready":
            raise ModelStateConflict(f"model {version.id} is {version.status}, not ready")
        loaded = await self.load(version.id, version.name)
        try:
            await self.smoke_test(loaded)
        except BaseException:
            await loaded.stop()
            raise
        return loaded

    async def _activate(self, version: Any, actor: str, *, action: str, job: Job | None = None) -> dict[str, Any]:
        previous = self.backend.current
        loaded = await self._load_checked(version, job)
        if job is not None:
            job.set("swapping")
        try:
            await self.registry.activate(version.id)
        except BaseException:
            await loaded.stop()
            raise
        if self._on_swap is not None:
            self._on_swap(loaded)
        # New requests reach the new engine from here on; this returns once the old one has drained and stopped.
        await self.backend.swap(loaded)
        result = {"activeId": version.id, "previousId": previous.version_id if previous else None}
        await self.audit.append(actor, "admin", action, target=version.id, details=dict(result))
        return result

    async def activate(self, id_or_name: str, actor: str) -> dict[str, Any]:
        """Make an installed version the serving one now (the CLI's ``use``)."""
        self._serving_here()
        async with self._exclusive():
            version = await self.registry.resolve(id_or_name)
            return await self._activate(version, actor, action="model.activate")

    async def rollback(self, actor: str) -> dict[str, Any]:
        self._serving_here()
        async with self._exclusive():
            previous = await self.registry.previous_active()
            if previous is None:
                raise ModelStateConflict("there is no previously active version to roll back to")
            return await self._activate(previous, actor, action="model.rollback")

    async def delete(self, version_id: str, actor: str) -> None:
        async with self._exclusive():
            version = await self.registry.get(version_id)
            serving = {loaded.version_id for loaded in (self.backend.current, self.backend.candidate) if loaded}
            if version.id in serving:
                raise ModelStateConflict(f"{version.id} is serving; activate or roll back to another version first")
            # A version still arriving: deleting it now would race the job, which would write it back as ready.
            running = any(job.status not in ("done", "failed") for job in self._jobs.values())
            if version.status in ("downloading", "verifying") and running:
                raise ModelStateConflict(f"{version.id} is still being downloaded; wait for its job to finish")
            await self.store.delete(version.id)
            await self.audit.append(
                actor, "admin", "model.delete", target=version.id, details={"sha256": version.sha256}
            )

    def _serving_here(self) -> None:
        """Swaps and A/B tests act on the model this process serves; a worker of ``serve --workers N`` has none
        (it is in the engine process), so a swap here would load a second copy that serves nobody."""
        if self.settings.engine_socket is not None:
            raise ModelStateConflict(
                "this server runs several workers and its model lives in the engine process: activate a version "
                "with `upcoach models activate` (or roll back) and restart the server (docs/scaling.md)"
            )

    def _exclusive(self) -> asyncio.Lock:
        if self._lock.locked():
            raise ModelStateConflict("another model change is running; wait for it to finish")
        return self._lock

    # ---- version A/B -------------------------------------------------------------------------------------------
    async def start_experiment(self, candidate_id: str, share: float, actor: str) -> VersionExperiment:
        self._serving_here()
        async with self._exclusive():
            if self.experiment is not None:
                raise ModelStateConflict("an A/B test is already running; stop or promote it first")
            current = self.backend.current
            if current is None or current.version_id is None:
                raise ModelStateConflict("the serving model is not a registry version: activate one first")
            candidate = await self.registry.resolve(candidate_id)
            if candidate.id == current.version_id:
                raise InvalidRequest("the candidate is the active version", param="candidateId")
            experiment = VersionExperiment(current.version_id, candidate.id, share)
            loaded = await self._load_checked(candidate)
            self.backend.start_experiment(loaded, experiment)
            self.experiment = experiment
            await self.audit.append(
                actor, "admin", "model.ab_started", target=candidate.id,
                details={"active": current.version_id, "candidate": candidate.id, "share": share},
            )  # fmt: skip
            return experiment

    async def stop_experiment(self, actor: str, *, promote: bool) -> dict[str, Any]:
        async with self._exclusive():
            experiment = self.experiment
            if experiment is None:
                raise ModelStateConflict("no A/B test is running")
            summary = experiment.to_json()
            if promote:
                await self.registry.activate(experiment.candidate_id)
            await self.backend.stop_experiment(promote=promote)
            self.experiment = None
            if promote and self._on_swap is not None and self.backend.current is not None:
                self._on_swap(self.backend.current)
            action = "model.ab_promoted" if promote else "model.ab_stopped"
            await self.audit.append(
                actor, "admin", action, target=experiment.candidate_id,
                details={"active": experiment.active_id, "candidate": experiment.candidate_id,
                         "requests": {v: s.requests for v, s in experiment.stats.items()}},
            )  # fmt: skip
            active = experiment.candidate_id if promote else experiment.active_id
            return {"activeId": active, "experiment": summary}
