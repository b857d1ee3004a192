"""The ``upcoach`` command: serve, chat, models, keys, audit."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from upcoach.config import Settings, default_parallel
from upcoach.errors import ModelNotReady, UpcoachError
from upcoach.modelstore import fetch as fetcher
from upcoach.modelstore.catalog import CATALOG, get_entry, is_path_reference
from upcoach.modelstore.crypto import model_key_provider
from upcoach.modelstore.registry import ModelRegistry, ModelVersion
from upcoach.modelstore.store import ModelStore
from upcoach.observability.audit import AuditLog, VerifyResult, audit_key_from_settings
from upcoach.observability.logs import LOG_FORMATS, configure_logging
from upcoach.security.keys import ApiKey, ApiKeys, Role
from upcoach.storage.audit import AuditFilter, AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.keys import ApiKeyRepository

app = typer.Typer(help="UpCoach AI: privacy-first hybrid local/cloud LLM backend.", no_args_is_help=True)
models_app = typer.Typer(help="List, fetch and locate local models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="Verify and export the audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
privacy_app = typer.Typer(help="Privacy jobs: retention.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
from upcoach.eval_cli import eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")
from upcoach.router_cli import router_app  # noqa: E402

app.add_typer(router_app, name="router")
ab_app = typer.Typer(help="Model-version A/B on a running server (needs an admin key).", no_args_is_help=True)
models_app.add_typer(ab_app, name="ab")

err = Console(stderr=True)
out = Console()


def _fail(exc: UpcoachError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(code=1)


@contextmanager
def _fetch_progress() -> Iterator[fetcher.ProgressFn]:
    """A rich progress display (on stderr) fed by the fetcher's progress callback."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:
        tasks: dict[str, int] = {}

        def update(event: fetcher.Progress) -> None:
            if event.phase == "download":
                if "download" not in tasks:
                    tasks["download"] = progress.add_task("downloading parts", total=event.total)
                progress.update(tasks["download"], completed=event.done, description=f"download {event.detail}")
            elif event.phase == "assemble":
                if "assemble" not in tasks:
                    tasks["assemble"] = progress.add_task("assemble + sha256", total=event.total)
                progress.update(tasks["assemble"], completed=event.done)
            elif event.phase == "done" and "assemble" in tasks:
                progress.update(tasks["assemble"], completed=event.total, description="verified sha256")

        yield update


def _ensure_model(settings: Settings, name: str | None = None) -> Path:
    reference = name or settings.local_model
    if is_path_reference(reference):
        return fetcher.resolve_model(reference, settings.models_dir, fetch_missing=False)
    entry = get_entry(reference)
    target = fetcher.model_path(entry, settings.models_dir)
    if target.exists():
        return target
    err.print(f"fetching {entry.name} ({entry.size / 1e6:.0f} MB) into {settings.models_dir}")
    with _fetch_progress() as progress:
        return fetcher.fetch(entry, settings.models_dir, progress=progress)


@models_app.command("list")
def models_list() -> None:
    """Show the installed versions (the encrypted store) and the catalog."""
    settings = Settings()

    async def installed() -> list[ModelVersion]:
        async with _model_store(settings) as store:
            return await store.registry.list()

    versions = asyncio.run(installed())
    table = Table("id", "status", "active", "size", "quant", "tier", "created", "sha256", title="installed (encrypted)")
    for version in versions:
        state = "active" if version.active else "previous" if version.previous else ""
        size = f"{version.size / 1e6:.0f} MB" if version.size else "?"
        status = version.status if not version.error else f"{version.status}: {version.error[:60]}"
        table.add_row(
            version.id, status, state, size, version.quantization or "", version.device_tier or "",
            _when(version.created_at), version.sha256[:12],
        )  # fmt: skip
    out.print(table if versions else "no installed versions: `upcoach models pull NAME|URL` or `models import FILE`")
    catalog = Table("name", "version", "size", "quant", "plaintext cache", "default", "description", title="catalog")
    for entry in CATALOG.values():
        present = fetcher.model_path(entry, settings.models_dir).exists()
        catalog.add_row(
            entry.name,
            entry.version,
            f"{entry.size / 1e6:.0f} MB",
            entry.quantization,
            "yes" if present else "no",
            "*" if entry.name == settings.local_model else "",
            entry.description,
        )
    out.print(catalog)


@contextmanager
def _store_progress(label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar (on stderr) fed by the model store's ``progress(done, total)`` callback."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=err, transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@asynccontextmanager
async def _model_store(settings: Settings) -> AsyncIterator[ModelStore]:
    async with _database(settings) as db:
        key = audit_key_from_settings(settings)
        assert key is not None  # created when missing
        yield ModelStore(settings, ModelRegistry(db), model_key_provider(settings), AuditLog(AuditRepository(db), key))


def _cli_actor() -> str:
    return f"cli:{getpass.getuser()}"[:128]


async def _install(store: ModelStore, label: str, install: Callable[..., Awaitable[ModelVersion]]) -> ModelVersion:
    """Run a pull or import with a progress bar; the outcome goes to the audit trail as a download event."""
    assert store.audit is not None
    try:
        with _store_progress(label) as progress:
            version = await install(progress=progress)
    except UpcoachError as exc:
        await store.audit.append(
            _cli_actor(), "admin", "model.download", target=label[:256], details={"phase": "failed", "code": exc.code}
        )
        raise
    await store.audit.append(
        _cli_actor(), "admin", "model.download", target=version.id,
        details={"phase": "finished", "sha256": version.sha256, "size": version.size},
    )  # fmt: skip
    return version


async def _activate(store: ModelStore, version: ModelVersion, action: str) -> ModelVersion:
    assert store.audit is not None
    before = await store.registry.active()
    activated = await store.registry.activate(version.id)
    await store.audit.append(
        _cli_actor(), "admin", action, target=activated.id,
        details={"activeId": activated.id, "previousId": before.id if before else None},
    )  # fmt: skip
    return activated


def _run_store(settings: Settings, work: Callable[[ModelStore], Awaitable[str]]) -> None:
    async def run() -> str:
        async with _model_store(settings) as store:
            return await work(store)

    try:
        message = asyncio.run(run())
    except UpcoachError as exc:
        raise _fail(exc) from exc
    out.print(message)


@models_app.command("pull")
def models_pull(
    source: Annotated[str, typer.Argument(help="catalog name, or an http(s) URL of a GGUF file")],
    name: Annotated[str | None, typer.Option(help="model name (URLs: default from the file name)")] = None,
    version: Annotated[str | None, typer.Option(help="version (URLs: default the first 12 digits of sha256)")] = None,
    sha256: Annotated[str | None, typer.Option(help="expected sha256 (required for URLs)")] = None,
    use: Annotated[bool, typer.Option("--use", help="activate it for the next start")] = False,
) -> None:
    """Download, verify (sha256) and store a model encrypted at rest. URL downloads resume where they stopped."""
    settings = Settings()

    async def work(store: ModelStore) -> str:
        installed = await _install(
            store, source, lambda **kw: store.pull(source, name=name, version=version, sha256=sha256, **kw)
        )
        if use:
            await _activate(store, installed, "model.activate")
            return f"{installed.id} ready and active from the next start"
        return f"{installed.id} ready (activate it with `upcoach models use {installed.id}`)"

    _run_store(settings, work)


@models_app.command("import")
def models_import(
    path: Annotated[Path, typer.Argument(help="a local GGUF file (left in place; an encrypted copy is stored)")],
    name: Annotated[str, typer.Option(help="model name")],
    version: Annotated[str | None, typer.Option(help="version; default the first 12 digits of its sha256")] = None,
    sha256: Annotated[str | None, typer.Option(help="expected sha256, checked")] = None,
    use: Annotated[bool, typer.Option("--use", help="activate it for the next start")] = False,
) -> None:
    """Encrypt a local model file into the store after checking it."""
    settings = Settings()

    async def work(store: ModelStore) -> str:
        installed = await _install(store, str(path), lambda **kw: store.import_file(path, name, version, sha256, **kw))
        if use:
            await _activate(store, installed, "model.activate")
            return f"{installed.id} imported and active from the next start"
        return f"{installed.id} imported"

    _run_store(settings, work)


@models_app.command("rm")
def models_rm(model: Annotated[str, typer.Argument(help="version id (name@version)")]) -> None:
    """Delete an installed version and its file. The active version is refused: activate another one first."""
    settings = Settings()

    async def work(store: ModelStore) -> str:
        assert store.audit is not None
        deleted = await store.delete(model)
        await store.audit.append(
            _cli_actor(), "admin", "model.delete", target=deleted.id, details={"sha256": deleted.sha256}
        )
        return f"{deleted.id} deleted"

    _run_store(settings, work)


@models_app.command("use")
def models_use(model: Annotated[str, typer.Argument(help="version id, or a name (its newest ready version)")]) -> None:
    """Activate an installed version: the server loads it at its next start (running servers: the update API)."""
    settings = Settings()

    async def work(store: ModelStore) -> str:
        activated = await _activate(store, await store.registry.resolve(model), "model.activate")
        return f"{activated.id} is active from the next start"

    _run_store(settings, work)


@models_app.command("rollback")
def models_rollback() -> None:
    """Re-activate the version that was active before the current one."""
    settings = Settings()

    async def work(store: ModelStore) -> str:
        previous = await store.registry.previous_active()
        if previous is None:
            raise ModelNotReady("there is no previously active version to roll back to")
        activated = await _activate(store, previous, "model.rollback")
        return f"rolled back: {activated.id} is active from the next start"

    _run_store(settings, work)


async def _first_start(settings: Settings) -> None:
    """On a fresh data folder, fetch the configured catalog model into the encrypted store and activate it.

    Nothing happens when a version is already active (the server loads it). A plaintext copy left by `models path`
    (older installs, the test suite's shared file) is encrypted into the store instead of downloading again, so the
    server never serves a plaintext file unless it is started with an explicit GGUF path.
    """
    reference = settings.local_model
    if is_path_reference(reference):
        fetcher.resolve_model(reference, settings.models_dir, fetch_missing=False)
        return
    entry = get_entry(reference)
    async with _model_store(settings) as store:
        if await store.registry.active() is not None:
            return
        cached = fetcher.model_path(entry, settings.models_dir)
        if cached.exists():
            err.print(f"first start: encrypting {cached} into the model store (delete that plaintext copy if unused)")
        else:
            err.print(f"first start: fetching {entry.name} ({entry.size / 1e6:.0f} MB) into the encrypted model store")
        installed = await _install(store, entry.name, lambda **kw: store.pull(entry.name, **kw))
        await _activate(store, installed, "model.activate")


@models_app.command("path")
def models_path(
    name: Annotated[str | None, typer.Argument(help="catalog name; default model if omitted")] = None,
) -> None:
    """Print the absolute path of a model's GGUF file (fetching it if missing) as the last line."""
    settings = Settings()
    try:
        path = _ensure_model(settings, name)
    except UpcoachError as exc:
        raise _fail(exc) from exc
    print(path.resolve())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (UPCOACH_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (UPCOACH_PORT)")] = None,
    model: Annotated[str | None, typer.Option(help="catalog name or GGUF path (UPCOACH_LOCAL_MODEL)")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="API processes on the port (UPCOACH_WORKERS; >1 needs Redis)")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS (UPCOACH_TLS_CERTFILE)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key (UPCOACH_TLS_KEYFILE)")] = None,
    tls_min_version: Annotated[str, typer.Option(help="lowest TLS version accepted: 1.2 or 1.3")] = "1.2",
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    log_format: Annotated[str, typer.Option(help="text, or json: one object per line, no message text")] = "text",
    parallel: Annotated[
        int | None, typer.Option(help="sequences decoded together (UPCOACH_PARALLEL); default: from cores and memory")
    ] = None,
) -> None:
    """Serve the HTTP API; fetches the configured model on first start."""
    from upcoach.app import create_app
    from upcoach.shutdown import GracefulServer
    from upcoach.workers import ServeConfig, serve_workers, uvicorn_options

    overrides = {
        k: v
        for k, v in {
            "host": host, "port": port, "local_model": model, "tls_certfile": tls_cert, "tls_keyfile": tls_key,
            "workers": workers,
            "parallel": parallel,
        }.items()
        if v is not None
    }  # fmt: skip
    settings = Settings(**overrides)
    if log_format not in LOG_FORMATS:
        err.print(f"[red]error:[/red] --log-format must be one of {', '.join(LOG_FORMATS)}")
        raise typer.Exit(code=2)
    configure_logging(log_level, log_format)
    if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
        err.print("[red]error:[/red] TLS needs both a certificate and a key")
        raise typer.Exit(code=2)
    if tls_min_version not in ("1.2", "1.3"):
        err.print("[red]error:[/red] --tls-min-version must be 1.2 or 1.3")
        raise typer.Exit(code=2)
    if settings.workers > 1 and not settings.redis_url:
        # Breakers, rate limits, budgets, sessions and the refusal brake would each count per process: refuse.
        err.print("[red]error:[/red] --workers above 1 needs UPCOACH_REDIS_URL, where the workers share their state")
        raise typer.Exit(code=2)
    if settings.load_model:
        chosen = settings.parallel or default_parallel(settings.threads, settings.context_size)
        origin = "UPCOACH_PARALLEL/--parallel" if settings.parallel else "chosen from cores and memory"
        try:
            # A terminal's notes and progress bars would break a JSON log stream: only the log lines go there.
            err.quiet = log_format == "json"
            err.print(f"local model: {chosen} parallel sequences ({origin}), {settings.queue_depth} more may wait")
            try:
                asyncio.run(_first_start(settings))
            finally:
                err.quiet = False
        except UpcoachError as exc:
            raise _fail(exc) from exc
    if settings.workers > 1:
        asyncio.run(_prepare_shared(settings))
        serve_workers(settings, log_level=log_level, log_format=log_format, tls_min_version=tls_min_version)
        return
    config = ServeConfig(create_app(settings), tls_min_version=tls_min_version, **uvicorn_options(settings, log_level))
    GracefulServer(config).run()  # SIGTERM drains running requests (shutdown.py), then exits 0


async def _prepare_shared(settings: Settings) -> None:
    """What one process does before several workers start: the schema, and model jobs a previous run left behind
    (a worker restarting later must not fail the downloads its siblings are running)."""
    from upcoach.modelstore.recovery import recover

    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        await recover(db, settings.models_dir)
    finally:
        await db.dispose()


@app.command()
def chat(
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    model: Annotated[str | None, typer.Option(help="catalog name or GGUF path; default: UPCOACH_LOCAL_MODEL")] = None,
    url: Annotated[
        str | None,
        typer.Option(help="talk to a running server (e.g. http://127.0.0.1:8080/v1) instead of in-process"),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="answer length cap")] = 512,
    key: Annotated[str | None, typer.Option(envvar="UPCOACH_API_KEY", help="API key for --url")] = None,
) -> None:
    """Interactive terminal chat that streams tokens. /reset clears the conversation, /exit or Ctrl-D quits."""
    from upcoach.chat_session import run_chat

    settings = Settings(**({"local_model": model} if model else {}))
    try:
        if url is None:
            _ensure_model(settings)
        asyncio.run(run_chat(settings, system=system, url=url, max_tokens=max_tokens, console=out, api_key=key))
    except UpcoachError as exc:
        raise _fail(exc) from exc
    except KeyboardInterrupt:
        sys.exit(130)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    """The configured database, migrated to head (the CLI may run before the server ever started)."""
    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        yield db
    finally:
        await db.dispose()


@asynccontextmanager
async def _api_keys(settings: Settings) -> AsyncIterator[ApiKeys]:
    async with _database(settings) as db:
        key = audit_key_from_settings(settings)
        assert key is not None  # created when missing
        # With Redis the servers cache verified keys: a revocation here must tell them (security/keys.py).
        redis = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            yield ApiKeys(ApiKeyRepository(db), AuditLog(AuditRepository(db), key), redis=redis)
        finally:
            if redis is not None:
                await redis.aclose()


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%MZ")


def _aware(value: datetime | None) -> datetime | None:
    # Times typed on the command line without a zone are read as UTC, the zone the trail is written in.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="user id the key acts as")],
    role: Annotated[Role, typer.Option("--role", help="what the key may do")] = Role.user,
) -> None:
    """Create an API key and print it as the last line. It is shown this once: only a digest is stored."""

    async def create() -> str:
        async with _api_keys(Settings()) as keys:
            issued = await keys.create(user, role)
        err.print(f"key {issued.key.id} for {user} ({role.value}), shown only now:")
        return issued.token

    # print, not rich: a console would wrap the long key at the terminal width.
    print(asyncio.run(create()))


@keys_app.command("list")
def keys_list() -> None:
    """Show every key (never its secret)."""

    async def fetch() -> list[ApiKey]:
        async with _api_keys(Settings()) as keys:
            return await keys.list()

    table = Table("id", "user", "role", "created", "last used", "revoked")
    for key in asyncio.run(fetch()):
        table.add_row(
            key.id, key.user_id, key.role.value, _when(key.created_at), _when(key.last_used_at), _when(key.revoked_at)
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key id (the part after uc_)")]) -> None:
    """Revoke a key: it is refused from the next request on."""

    async def revoke() -> datetime | None:
        async with _api_keys(Settings()) as keys:
            return (await keys.revoke(key_id)).revoked_at

    try:
        revoked_at = asyncio.run(revoke())
    except UpcoachError as exc:
        raise _fail(exc) from exc
    out.print(f"key {key_id} revoked at {_when(revoked_at)}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the whole HMAC chain. Exit 0 if intact; 1 naming the first edited, deleted or moved row."""
    settings = Settings()

    async def verify() -> VerifyResult | None:
        async with _database(settings) as db:
            repository = AuditRepository(db)
            key = audit_key_from_settings(settings, create=False)
            if key is None:
                # A new install has no key yet and nothing to verify; rows without their key cannot be checked.
                empty = not await repository.query(AuditFilter(), 1)
                return VerifyResult(True, 0, None, "0 rows intact (empty trail)") if empty else None
            return await AuditLog(repository, key).verify()

    result = asyncio.run(verify())
    if result is None:
        err.print("[red]error:[/red] no audit key: set UPCOACH_AUDIT_KEY or restore <data_dir>/audit.key")
        raise typer.Exit(code=2)
    if not result.ok:
        err.print(f"[red]audit trail broken at row {result.first_bad_id}:[/red] {result.reason}")
        raise typer.Exit(code=1)
    print(f"audit trail intact: {result.reason}; head {result.head_hmac or '-'}")


class ExportFormat(StrEnum):
    # One format so far; scripts name it (--format jsonl) so that adding another never changes their output.
    jsonl = "jsonl"


@audit_app.command("export")
def audit_export(
    output_format: Annotated[ExportFormat, typer.Option("--format", help="output format")] = ExportFormat.jsonl,
    actor: Annotated[str | None, typer.Option(help="only this actor")] = None,
    action: Annotated[str | None, typer.Option(help="only this action, e.g. auth.refused")] = None,
    since: Annotated[datetime | None, typer.Option(help="from this time (UTC unless a zone is given)")] = None,
    until: Annotated[datetime | None, typer.Option(help="up to this time (UTC unless a zone is given)")] = None,
) -> None:
    """Write the audit trail (or the matching part) to stdout, one JSON object per line, oldest first."""
    filters = AuditFilter(actor=actor, action=action, since=_aware(since), until=_aware(until))

    async def export() -> None:
        async with _database(Settings()) as db:
            async for event in AuditRepository(db).scan(filters):
                sys.stdout.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")

    asyncio.run(export())


@privacy_app.command("retention")
def privacy_retention() -> None:
    """Delete request records older than each user's retention period (UPCOACH_DEFAULT_RETENTION_DAYS for users
    who never chose one), as the server's hourly job does."""
    from upcoach.privacy.retention import RetentionJob
    from upcoach.storage.fences import Fences
    from upcoach.storage.privacy import PrivacyRepository

    settings = Settings()

    async def run() -> int:
        async with _database(settings) as db:
            repository = PrivacyRepository(db)
            return await RetentionJob(repository, settings.default_retention_days, 3600, fences=Fences(db),
                                      fence_days=settings.erasure_fence_days).run_once()  # fmt: skip

    print(f"retention: deleted {asyncio.run(run())} expired request records")


@models_app.command("eval")
def models_eval(
    ids: Annotated[
        list[str] | None,
        typer.Argument(help="registry ids (name@version), catalog names or GGUF paths; default: every ready version"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the full report as JSON instead of a table")] = False,
    max_tokens: Annotated[int, typer.Option(help="answer length cap per prompt")] = 96,
) -> None:
    """Score model versions on the fixed prompt set: latency, tokens/s and answer checks (#6)."""
    from upcoach.llm.llamacpp import LlamaCppEngine
    from upcoach.modelstore.evaluation import evaluate, load_prompt_set
    from upcoach.modelstore.manager import engine_config_for

    settings = Settings()
    prompt_set = load_prompt_set()

    async def run() -> list[dict[str, object]]:
        reports: list[dict[str, object]] = []
        async with _eval_targets(settings, ids or []) as targets:
            for label, path in targets:
                err.print(f"evaluating {label} ({len(prompt_set.prompts)} prompts)")
                engine = LlamaCppEngine(engine_config_for(settings, path, label))
                await engine.start()
                try:
                    if not engine.ready:
                        raise UpcoachError(f"{label} did not load: {(await engine.health()).reason}")
                    report = await evaluate(engine, label, prompt_set, max_tokens=max_tokens)
                finally:
                    await engine.stop()
                reports.append(report.to_json())
        return reports

    try:
        reports = asyncio.run(run())
    except UpcoachError as exc:
        raise _fail(exc) from exc
    if as_json:
        print(json.dumps(reports, indent=2))
        return
    table = Table("model", "passed", "score", "first token ms", "total ms", "tokens/s", "failures")
    for report in reports:
        failures = [f"{p['id']}: {'; '.join(p['failures'])}" for p in report["prompts"] if p["failures"]]  # type: ignore[attr-defined]
        table.add_row(
            str(report["model"]), f"{report['passed']}/{report['total']}", str(report["score"]),
            str(report["firstTokenMsMean"]), str(report["totalMsMean"]), str(report["tokensPerSecondMean"]),
            "\n".join(failures) or "-",
        )  # fmt: skip
    out.print(table)


@asynccontextmanager
async def _eval_targets(settings: Settings, ids: list[str]) -> AsyncIterator[list[tuple[str, Path]]]:
    """(label, GGUF path) per id. Stored versions are decrypted into memory files that live until the exit."""
    from contextlib import AsyncExitStack

    from upcoach.modelstore.crypto import model_key_provider
    from upcoach.modelstore.registry import ModelRegistry
    from upcoach.modelstore.store import ModelStore

    async with _database(settings) as db, AsyncExitStack() as stack:
        registry = ModelRegistry(db)
        key = audit_key_from_settings(settings)
        assert key is not None
        store = ModelStore(settings, registry, model_key_provider(settings), AuditLog(AuditRepository(db), key))
        if not ids:
            ids = [v.id for v in await registry.list() if v.status == "ready"] or [settings.local_model]
        targets: list[tuple[str, Path]] = []
        for reference in ids:
            plain = None
            if is_path_reference(reference):
                plain = fetcher.resolve_model(reference, settings.models_dir, fetch_missing=False)
            elif "@" not in reference and reference in CATALOG:
                candidate = fetcher.model_path(get_entry(reference), settings.models_dir)
                plain = candidate if candidate.exists() else None
            if plain is not None:
                targets.append((Path(reference).stem if is_path_reference(reference) else reference, plain))
                continue
            version = await registry.resolve(reference)
            path = await stack.enter_async_context(store.open_plaintext(version.id))
            targets.append((version.id, Path(path)))
        yield targets


# ---- model-version A/B: the test lives in the running server, so these commands call its API ---------------------
ServerUrl = Annotated[str, typer.Option("--url", envvar="UPCOACH_URL", help="the running server")]
AdminKey = Annotated[str | None, typer.Option("--key", envvar="UPCOACH_API_KEY", help="an admin API key")]
DEFAULT_URL = "http://127.0.0.1:8080"


def _call_server(method: str, url: str, path: str, key: str | None, body: dict[str, object] | None = None) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(method, url.rstrip("/") + path, headers=headers, json=body, timeout=120)
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] cannot reach {url}: {exc}")
        raise typer.Exit(code=1) from exc
    payload = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        error = payload.get("error", {}) if isinstance(payload, dict) else {}
        err.print(f"[red]error {response.status_code}:[/red] {error.get('message') or response.text}")
        raise typer.Exit(code=1)
    return payload


def _print_ab(test: dict | None) -> None:
    if not test:
        out.print("no A/B test is running")
        return
    out.print(f"active {test['activeId']}, candidate {test['candidateId']} for {test['share']:.0%} of users")
    table = Table("version", "requests", "first token P50/P95 ms", "total P50/P95 ms", "ratings", "mean rating")
    for version, stats in test["versions"].items():
        first, total, ratings = stats["firstTokenMs"], stats["totalMs"], stats["ratings"]
        table.add_row(
            version, str(stats["requests"]), f"{first['p50']} / {first['p95']}", f"{total['p50']} / {total['p95']}",
            str(ratings["count"]), str(ratings["mean"]),
        )  # fmt: skip
    out.print(table)


@ab_app.command("start")
def ab_start(
    candidate: Annotated[str, typer.Argument(help="the candidate version, name@version")],
    share: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of users sent to the candidate")] = 0.1,
    url: ServerUrl = DEFAULT_URL,
    key: AdminKey = None,
) -> None:
    """Load a candidate beside the active version and send a sticky share of users to it."""
    _print_ab(_call_server("POST", url, "/api/ai/models/ab", key, {"candidateId": candidate, "share": share})["abTest"])


@ab_app.command("status")
def ab_status(url: ServerUrl = DEFAULT_URL, key: AdminKey = None) -> None:
    """Latency and user ratings per version of the running A/B test."""
    _print_ab(_call_server("GET", url, "/api/ai/models/ab", key)["abTest"])


@ab_app.command("promote")
def ab_promote(url: ServerUrl = DEFAULT_URL, key: AdminKey = None) -> None:
    """Make the candidate the active version (the previous one stays installed for a rollback)."""
    out.print_json(data=_call_server("POST", url, "/api/ai/models/ab/promote", key))


@ab_app.command("stop")
def ab_stop(url: ServerUrl = DEFAULT_URL, key: AdminKey = None) -> None:
    """End the test and keep the active version for everyone (roll the candidate back)."""
    out.print_json(data=_call_server("POST", url, "/api/ai/models/ab/stop", key))


if __name__ == "__main__":
    app()
