"""The ``upcoach`` command: serve, chat, models."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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

app = typer.Typer(help="UpCoach AI: privacy-first hybrid local/cloud LLM backend.", no_args_is_help=True)
models_app = typer.Typer(help="List, fetch and locate local models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

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
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Serve the HTTP API; fetches the configured model on first start."""
    import uvicorn

    from upcoach.app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port, "local_model": model}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.load_model:
        try:
            _ensure_model(settings)
        except UpcoachError as exc:
            raise _fail(exc) from exc
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


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


if __name__ == "__main__":
    app()
