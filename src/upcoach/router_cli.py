"""``upcoach router train|evaluate|use|list``: learned router versions (issue 20; routing/learned*.py).

- ``train``: fit a version on the logged free choices in the database (default), on a labelled set of requests
  (``--labelled``), or on a simulator log (``--simulate N``, requests drawn from the labelled set); sign and store it.
- ``evaluate VERSION``: off-policy evaluation (IPS and doubly robust, bootstrap 95 % intervals) of the version, the
  active one and the rules, on the logged data (or a fresh simulator log with exploration).
- ``use VERSION``: make it the active router (promotion and rollback alike); the engine loads it at start.
- ``list``: the stored versions, the active one marked.

Training needs scikit-learn (the ``dev`` extra); serving does not.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from upcoach.config import Settings
from upcoach.routing.learned import LearnedRouter
from upcoach.routing.learned_eval import Evaluation, Logged, evaluate, router_policy, rules_policy
from upcoach.routing.learned_sim import Ask, free_rows, simulate
from upcoach.routing.learned_store import RouterStore

router_app = typer.Typer(help="Learned routing: train, evaluate, promote and roll back router versions.",
                         no_args_is_help=True)  # fmt: skip
DEFAULT_LABELLED = Path("benchmarks/data/routing_requests.jsonl")


def load_labelled(path: Path, split: str | None = None) -> list[Ask]:
    asks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if split is None or item.get("split") == split:
            asks.append(Ask(item["text"], bool(item["local_ok"]), item.get("lang", "en")))
    return asks


def labelled_rows(asks: list[Ask]) -> list[Logged]:
    """Each labelled request as a full-information local-side row: reward 1 when the local model copes."""
    from upcoach.llm.base import ChatMessage
    from upcoach.routing.features import extract
    from upcoach.routing.learned import dense

    return [
        Logged(dense(extract((ChatMessage("user", a.text),))), 0.0, "local", 1.0 if a.local_ok else 0.0, 1.0, a.text)
        for a in asks
    ]


async def _db_rows(settings: Settings) -> list[Logged]:
    from upcoach.routing.learned_data import logged_rows
    from upcoach.storage.database import Database

    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        return await logged_rows(db)
    finally:
        await db.dispose()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@router_app.command("train")
def train(
    labelled: Annotated[Path | None, typer.Option(help="train on this labelled JSONL (text, local_ok, split)")] = None,
    split: Annotated[str | None, typer.Option(help="only this split of the labelled set")] = "dev",
    simulate_requests: Annotated[int, typer.Option("--simulate", help="train on a simulator log of N requests")] = 0,
    explore: Annotated[float, typer.Option(help="exploration share of the simulated logging policy")] = 0.05,
    target_local: Annotated[float | None, typer.Option(help="threshold: keep this share of requests local")] = None,
    quality_floor: Annotated[float | None, typer.Option(help="threshold: local only when p_local reaches it")] = None,
    version: Annotated[str | None, typer.Option(help="version name (default: time and digest)")] = None,
    use: Annotated[bool, typer.Option("--use", help="make the new version active at once")] = False,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 0,
) -> None:
    """Fit, sign and store a router version."""
    from upcoach.routing.learned_train import train as fit

    settings = Settings()
    store = RouterStore.from_settings(settings)
    base = store.active()
    if simulate_requests:
        pool = load_labelled(labelled or DEFAULT_LABELLED, split)
        log = simulate(pool, simulate_requests, router=base, explore=explore, seed=seed)
        rows, source = free_rows(log, keep_text=True), f"simulator ({simulate_requests} requests, seed {seed})"
    elif labelled is not None:
        rows, source = labelled_rows(load_labelled(labelled, split)), f"labelled {labelled} ({split or 'all'})"
    else:
        rows, source = asyncio.run(_db_rows(settings)), "request records"
    try:
        payload = fit(rows, base=base, target_local=target_local, quality_floor=quality_floor, source=source,
                      version=version)  # fmt: skip
        manifest = store.save(payload)
    except (ValueError, FileExistsError) as exc:
        raise _fail(str(exc)) from exc
    threshold = payload["threshold"]
    typer.echo(f"router {manifest.version}: trained on {len(rows)} rows ({source}), threshold {threshold:.3f}, "
               f"sha256 {manifest.sha256[:12]}, signed by key {manifest.key_id}")  # fmt: skip
    if use:
        store.use(manifest.version)
        typer.echo(f"active router: {manifest.version}")


def _evaluations(rows: list[Logged], candidate: LearnedRouter, active: LearnedRouter | None, rounds: int,
                 complexity_threshold: float) -> list[Evaluation]:  # fmt: skip
    results = [evaluate(f"candidate {candidate.version}", router_policy(candidate), rows, rounds=rounds)]
    if active is not None and active.version != candidate.version:
        results.append(evaluate(f"active {active.version}", router_policy(active), rows, rounds=rounds))
    results.append(evaluate("rules", rules_policy(complexity_threshold), rows, rounds=rounds))
    return results


@router_app.command("evaluate")
def evaluate_cmd(
    version: Annotated[str, typer.Argument(help="the candidate router version")],
    simulate_requests: Annotated[int, typer.Option("--simulate", help="evaluate on a fresh simulator log")] = 0,
    labelled: Annotated[Path, typer.Option(help="the simulator's request pool")] = DEFAULT_LABELLED,
    split: Annotated[str | None, typer.Option(help="split of the pool")] = "held",
    explore: Annotated[float, typer.Option(help="exploration share of the simulated logging policy")] = 0.2,
    rounds: Annotated[int, typer.Option(help="bootstrap resamples")] = 500,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Off-policy estimates (IPS, DR) of the candidate, the active router and the rules on logged free choices."""
    settings = Settings()
    store = RouterStore.from_settings(settings)
    try:
        candidate = store.load(version)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    active = store.active()
    if simulate_requests:
        log = simulate(load_labelled(labelled, split), simulate_requests, router=active, explore=explore, seed=seed)
        rows = free_rows(log, keep_text=True)
    else:
        rows = asyncio.run(_db_rows(settings))
    try:
        results = _evaluations(rows, candidate, active, rounds, settings.complexity_threshold)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps([{"policy": r.policy, "rows": r.rows,
                                **{k: vars(getattr(r, k)) for k in ("ips", "dr", "local_share")}}
                               for r in results], indent=2))  # fmt: skip
        return
    typer.echo(f"{'policy':<34} {'rows':>6}  {'IPS quality [95% CI]':<24} {'DR quality [95% CI]':<24} local share")
    for r in results:
        typer.echo(f"{r.policy:<34} {r.rows:>6}  {r.ips!s:<24} {r.dr!s:<24} {r.local_share}")


@router_app.command("use")
def use(version: Annotated[str, typer.Argument(help="router version to make active (promote or roll back)")]) -> None:
    """Make a stored, verified version the active router (the engine loads it at its next start)."""
    store = RouterStore.from_settings(Settings())
    try:
        store.use(version)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"active router: {version}")
    if (spec := store.ab_spec()) is not None:
        typer.echo(f"note: the A/B {spec['key']} still runs (control {spec['control']}); `router ab stop` ends it")


@router_app.command("list")
def list_cmd() -> None:
    """The stored router versions; * marks the active one."""
    rows = RouterStore.from_settings(Settings()).list()
    if not rows:
        typer.echo("no router versions (routing by the rules)")
        return
    for r in rows:
        meta = r.meta
        typer.echo(f"{'*' if r.active else ' '} {r.version}  {meta.get('created_at', '')}  "
                   f"{meta.get('source', '')}  rows {meta.get('rows', '?')}")  # fmt: skip


ab_app = typer.Typer(help="A/B between the active router and a candidate (sticky per user).", no_args_is_help=True)
router_app.add_typer(ab_app, name="ab")


@ab_app.command("start")
def ab_start(
    version: Annotated[str, typer.Argument(help="the candidate router version")],
    share: Annotated[float, typer.Option(help="share of users routed by the candidate")] = 0.1,
) -> None:
    """Route a sticky share of users with the candidate (from the engine's next start); the rest keep the active."""
    store = RouterStore.from_settings(Settings())
    try:
        ab = store.start_ab(version, share)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"router A/B {ab.key}: {share:.0%} of users on {version}")


@ab_app.command("stop")
def ab_stop() -> None:
    """End the A/B: the active router routes everyone again (promote with `router use VERSION` first if it won)."""
    stopped = RouterStore.from_settings(Settings()).stop_ab()
    typer.echo("router A/B stopped" if stopped else "no router A/B running")


@ab_app.command("status")
def ab_status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Each arm's free choices (analytics opt-in users): good-outcome rate and local share, candidate vs control."""
    from upcoach.experiments.stats import compare_rates, rate_summary
    from upcoach.routing.learned_data import arm_outcomes
    from upcoach.storage.database import Database

    settings = Settings()
    spec = RouterStore.from_settings(settings).ab_spec()
    if spec is None:
        raise _fail("no router A/B running")

    async def fetch() -> list:
        db = Database(settings.effective_database_url)
        try:
            await db.migrate()
            return await arm_outcomes(db, [spec["control"], spec["candidate"]])
        finally:
            await db.dispose()

    control, candidate = asyncio.run(fetch())
    report: dict[str, object] = {"key": spec["key"], "share": spec["share"]}
    for metric, attr in (("good_rate", "good"), ("local_share", "local")):
        a, b = rate_summary(getattr(control, attr), control.n), rate_summary(getattr(candidate, attr), candidate.n)
        diff = compare_rates(a, b)
        report[metric] = {"control": vars(a), "candidate": vars(b), "difference": diff.difference, "ci": diff.ci,
                          "p_value": diff.p_value}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=list))
        return
    typer.echo(f"{spec['key']}: control {spec['control']} ({control.n} choices), candidate {spec['candidate']} "
               f"({candidate.n} choices)")  # fmt: skip
    for metric in ("good_rate", "local_share"):
        entry = report[metric]
        assert isinstance(entry, dict)
        typer.echo(f"  {metric}: control {entry['control']['rate']}, candidate {entry['candidate']['rate']}, "
                   f"difference {entry['difference']} (95% CI {entry['ci']}, p {entry['p_value']})")  # fmt: skip
