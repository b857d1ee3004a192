"""``upcoach eval quality``: the coaching answer-quality harness (coaching/quality_eval.py) on an in-process app.

The app is built by ``create_app`` in a throwaway data folder (the model file linked in, nothing listening on the
network, so authentication is off for it), with the persona, grounding and answer checks switched as asked; every
request goes through ``POST /api/ai/hybrid/process``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from upcoach.coaching import quality_eval as qe
from upcoach.coaching.prompts import PROMPT_VERSION
from upcoach.config import Settings

eval_app = typer.Typer(help="Measure answer quality (docs/quality.md).", no_args_is_help=True)
DEFAULT_REQUESTS = Path("benchmarks/data/quality_requests.jsonl")


@eval_app.command("quality")
def quality(
    requests: Annotated[Path, typer.Option(help="JSONL of requests with must/must_not")] = DEFAULT_REQUESTS,
    out: Annotated[Path, typer.Option(help="where to write the JSON results")] = Path("quality-results.json"),
    model: Annotated[str | None, typer.Option(help="catalog name or GGUF path (default UPCOACH_LOCAL_MODEL)")] = None,
    limit: Annotated[int | None, typer.Option(help="score this many requests, spread over the file")] = None,
    persona: Annotated[bool, typer.Option(help="built-in coaching persona")] = True,
    grounding: Annotated[bool, typer.Option(help="library strategies as material")] = True,
    checks: Annotated[bool, typer.Option(help="answer checks with regeneration and fallback")] = True,
    temperature: Annotated[float | None, typer.Option(help="fixed temperature (default: the model's)")] = None,
    max_tokens: Annotated[int, typer.Option(help="answer length cap")] = 160,
) -> None:
    """Score coaching answers of the local model with the checks and the rubric (plus a cloud judge if configured)."""
    from fastapi.testclient import TestClient

    from upcoach.app import create_app
    from upcoach.cli import _ensure_model

    logging.basicConfig(level=logging.WARNING)
    base = Settings()
    model_path = _ensure_model(base, model)
    cases = qe.pick(qe.load_cases(requests), limit)
    config: dict[str, Any] = {"model": model_path.stem, "prompt_version": PROMPT_VERSION if persona else None,
                              "persona": persona, "grounding": grounding, "checks": checks,
                              "temperature": temperature, "max_tokens": max_tokens, "requests": len(cases),
                              "file": str(requests)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (data / "models").mkdir()
        (data / "models" / model_path.name).symlink_to(model_path.resolve())
        settings = base.model_copy(
            update={"data_dir": data, "database_url": None, "redis_url": None, "auth": "off",
                    "local_model": model or base.local_model, "coach_persona": persona,
                    "grounding": grounding, "answer_checks": checks}
        )  # fmt: skip
        with TestClient(create_app(settings)) as client:
            deadline = time.monotonic() + 600
            while client.get("/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise typer.Exit(code=1)
                time.sleep(0.5)

            def progress(n: int, total: int, scored: qe.Scored) -> None:
                typer.echo(f"[{n}/{total}] {scored.id}: {scored.rubric:.1f} {', '.join(scored.failures)}", err=True)

            scored = qe.run_cases(client, cases, max_tokens=max_tokens, temperature=temperature, progress=progress)
    if base.cloud_base_url:
        asyncio.run(_judge_all(base, cases, scored))
        config["judge"] = base.cloud_model
    summary = qe.write(out, config, scored)
    typer.echo(json.dumps({"config": config, "summary": summary}, indent=2, ensure_ascii=False))


async def _judge_all(settings: Settings, cases: list[qe.QualityCase], scored: list[qe.Scored]) -> None:
    """The cloud answers each request too and judges local against it, positions swapped."""
    from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
    from upcoach.routing.factory import cloud_backend

    cloud = cloud_backend(settings)
    assert cloud is not None
    try:
        for case, result in zip(cases, scored, strict=True):
            messages = tuple(ChatMessage(m["role"], m["content"]) for m in case.messages)
            reference = await cloud.chat(ChatRequest(messages, GenerationParams(max_tokens=300)))
            result.judge = await qe.judge(cloud, case, result.answer, reference.text)
    finally:
        await cloud.aclose()
