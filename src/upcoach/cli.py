"""The ``upcoach`` command: serve, chat, models, keys, audit."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
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

from upcoach.config import Settings
from upcoach.errors import UpcoachError
from upcoach.modelstore import fetch as fetcher
from upcoach.modelstore.catalog import CATALOG, get_entry, is_path_reference
from upcoach.observability.audit import AuditLog, VerifyResult, audit_key_from_settings
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
    """Show the catalog and which models are downloaded."""
    settings = Settings()
    table = Table("name", "size", "quant", "downloaded", "default", "description")
    for entry in CATALOG.values():
        present = fetcher.model_path(entry, settings.models_dir).exists()
        table.add_row(
            entry.name,
            f"{entry.size / 1e6:.0f} MB",
            entry.quantization,
            "yes" if present else "no",
            "*" if entry.name == settings.local_model else "",
            entry.description,
        )
    out.print(table)


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="catalog name")]) -> None:
    """Download, assemble and verify a catalog model."""
    settings = Settings()
    try:
        path = _ensure_model(settings, name)
    except UpcoachError as exc:
        raise _fail(exc) from exc
    out.print(f"{name} ready: {path}")


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
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS (UPCOACH_TLS_CERTFILE)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key (UPCOACH_TLS_KEYFILE)")] = None,
    tls_min_version: Annotated[str, typer.Option(help="lowest TLS version accepted: 1.2 or 1.3")] = "1.2",
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Serve the HTTP API; fetches the configured model on first start."""
    import ssl

    import uvicorn

    from upcoach.app import create_app

    overrides = {
        k: v
        for k, v in {
            "host": host, "port": port, "local_model": model, "tls_certfile": tls_cert, "tls_keyfile": tls_key,
        }.items()
        if v is not None
    }  # fmt: skip
    settings = Settings(**overrides)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
        err.print("[red]error:[/red] TLS needs both a certificate and a key")
        raise typer.Exit(code=2)
    if tls_min_version not in ("1.2", "1.3"):
        err.print("[red]error:[/red] --tls-min-version must be 1.2 or 1.3")
        raise typer.Exit(code=2)
    if settings.load_model:
        try:
            _ensure_model(settings)
        except UpcoachError as exc:
            raise _fail(exc) from exc
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
        ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
        ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
    )
    config.load()
    if config.ssl is not None:
        # uvicorn builds the context; the floor is ours to set.
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3 if tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    uvicorn.Server(config).run()


@app.command()
def chat(
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    model: Annotated[str | None, typer.Option(help="catalog name or GGUF path; default: UPCOACH_LOCAL_MODEL")] = None,
    url: Annotated[
        str | None,
        typer.Option(help="talk to a running server (e.g. http://127.0.0.1:8080/v1) instead of in-process"),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="answer length cap")] = 512,
) -> None:
    """Interactive terminal chat that streams tokens. /reset clears the conversation, /exit or Ctrl-D quits."""
    from upcoach.chat_session import run_chat

    settings = Settings(**({"local_model": model} if model else {}))
    try:
        if url is None:
            _ensure_model(settings)
        asyncio.run(run_chat(settings, system=system, url=url, max_tokens=max_tokens, console=out))
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
        yield ApiKeys(ApiKeyRepository(db), AuditLog(AuditRepository(db), key))


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


if __name__ == "__main__":
    app()
