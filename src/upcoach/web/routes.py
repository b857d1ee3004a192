"""The transparency dashboard at /dashboard: sign-in, a user's own requests and privacy settings, the admin view.

Server-rendered HTML that works without JavaScript. Sign-in turns an API key or token, checked by the app's
Authenticator (so refusals reach the audit trail like any other), into a server-side session cookie; every form
carries a per-session CSRF token. Routes stay thin: records come from the repositories, settings changes go
through ``services.privacy``, and display wording lives in views.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from upcoach.config import Settings
from upcoach.errors import AuthThrottled, Forbidden, Unauthorized, UpcoachError
from upcoach.privacy.settings import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS, PROCESSING_MODES, PrivacySettings
from upcoach.security.acting import ACTED_FOR, VIEWED
from upcoach.security.auth import DEV_PRINCIPAL, Authenticator, Principal, client_address
from upcoach.security.keys import Role
from upcoach.security.throttle import FailureThrottle
from upcoach.services import Services
from upcoach.storage.dashboard import DashboardRepository, Granularity
from upcoach.web.sessions import Session, SessionStore, new_token, tokens_match
from upcoach.web.views import access_row, admin_charts, device_shares, quality, request_row, usd, when

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
SESSION_COOKIE = "uc_dashboard"
SIGNIN_COOKIE = "uc_dashboard_signin"  # the sign-in form's CSRF token, before there is a session
SIGNIN_WINDOW_SECONDS = 300
PAGE_SIZE = 20
ACCESS_ROWS = 20  # the newest accesses to a user's data by someone else
MAX_PAGE = 10_000
RANGES: dict[str, tuple[timedelta, Granularity]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "day"),
    "30d": (timedelta(days=30), "day"),
}
VIEWER_ROLES = (Role.admin, Role.auditor)

SECURITY_HEADERS = {
    # No script at all; styles only from our own stylesheet; forms post only back here; never framed.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(prefix=PREFIX, include_in_schema=False)


@dataclass
class Dashboard:
    settings: Settings
    sessions: SessionStore
    throttle: FailureThrottle


class DashboardHeaders:
    """Security headers on every /dashboard response, including static files and error pages; pages (which
    show a signed-in user's data) are never stored by the browser or a proxy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(PREFIX + "/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["Cache-Control"] = "no-cache" if static else "no-store"
                if not static:
                    headers["Pragma"] = "no-cache"
            await send(message)

        await self.app(scope, receive, with_headers)


def share_through_redis(app: FastAPI, redis: object) -> None:
    """Keep sessions and the sign-in brake in Redis (create_app's lifespan calls this when Redis is configured), so
    every worker of ``upcoach serve --workers N`` sees the same ones."""
    dashboard = _dashboard_of(app)
    settings = dashboard.settings
    dashboard.sessions = SessionStore(
        ttl_seconds=dashboard.sessions.ttl_seconds, idle_seconds=dashboard.sessions.idle_seconds, redis=redis
    )
    dashboard.throttle = FailureThrottle(
        attempts=settings.dashboard_signin_attempts, window_seconds=SIGNIN_WINDOW_SECONDS, redis=redis,
        name="dashboard",
    )  # fmt: skip


def _dashboard_of(app: FastAPI) -> Dashboard:
    dashboard = app.state.dashboard
    assert isinstance(dashboard, Dashboard)
    return dashboard


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard from ``app``: routes, static files, headers, and the session store."""
    app.state.dashboard = Dashboard(
        settings=settings,
        sessions=SessionStore(
            ttl_seconds=settings.dashboard_session_minutes * 60, idle_seconds=settings.dashboard_idle_minutes * 60
        ),
        throttle=FailureThrottle(attempts=settings.dashboard_signin_attempts, window_seconds=SIGNIN_WINDOW_SECONDS),
    )
    app.include_router(router)
    app.mount(PREFIX + "/static", StaticFiles(directory=Path(__file__).parent / "static"), name="dashboard-static")
    app.add_middleware(DashboardHeaders)


# ---- helpers ---------------------------------------------------------------------------------------------------


def _dashboard(request: Request) -> Dashboard:
    return _dashboard_of(request.app)


def _services(request: Request) -> Services:
    services = request.app.state.services
    assert isinstance(services, Services)
    return services


async def _session(request: Request) -> Session | None:
    """The live session of this browser. A session whose API key was revoked or whose token expired since
    sign-in ends here, on its next request."""
    sessions = _dashboard(request).sessions
    session = await sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    authenticator = request.app.state.authenticator
    if not isinstance(authenticator, Authenticator) or not await authenticator.still_valid(session.principal):
        await sessions.revoke(session.id)
        await _audit(request, session.principal, "dashboard.session_ended")
        return None
    request.state.principal = session.principal
    return session


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _delete_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path=PREFIX, httponly=True, samesite="strict", secure=request.url.scheme == "https")


def _render(
    request: Request,
    template: str,
    *,
    session: Session | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    principal = session.principal if session is not None else None
    base = {
        "auth_off": _dashboard(request).settings.auth == "off",
        "principal": principal,
        "csrf_token": session.csrf_token if session is not None else None,
        "is_viewer": principal is not None and principal.role in VIEWER_ROLES,
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status, headers=headers)


def _message(request: Request, session: Session | None, status: int, title: str, text: str) -> Response:
    return _render(request, "message.html", session=session, status=status, title=title, text=text)


def _csrf_refused(request: Request, session: Session | None) -> Response:
    return _message(
        request, session, 403, "Form expired", "This form was missing its security token or it no longer matches "
        "your session. Go back, reload the page and try again."
    )  # fmt: skip


def _to_signin() -> Response:
    return RedirectResponse(PREFIX + "/signin", status_code=303)


@dataclass(frozen=True)
class _Posted:
    session: Session
    form: FormData
    service: Any  # the Services attribute the form acts on (None when the form needs none)


# The Services attribute a dashboard form acts on, and the page shown when this server has none.
_MISSING_SERVICE = {
    "privacy": ("Settings unavailable", "This server has no privacy settings service."),
    "devices": ("Devices unavailable", "This server has no device registry."),
}


async def _form_session(request: Request, service: str | None = None) -> _Posted | Response:
    """The start of every dashboard POST after sign-in: the live session (else the sign-in page), the form, its
    CSRF token (else 403), and the service the form acts on (else 503). A Response is the answer to send."""
    session = await _session(request)
    if session is None:
        return _to_signin()
    form = await request.form()
    if not tokens_match(session.csrf_token, _text(form, "csrf_token")):
        return _csrf_refused(request, session)
    found = getattr(_services(request), service) if service is not None else None
    if service is not None and found is None:
        title, text = _MISSING_SERVICE[service]
        return _message(request, session, 503, title, text)
    return _Posted(session, form, found)


async def _audit(request: Request, principal: Principal, action: str) -> None:
    audit = getattr(request.app.state, "audit_log", None)
    if audit is None:
        return
    try:
        await audit.append(principal.user_id, principal.role.value, action, target=principal.key_id,
                           details={"via": principal.via, "client": client_address(request)})  # fmt: skip
    except Exception:
        # A sign-in record is informational; an audit outage must not lock everyone out of the dashboard.
        log.exception("could not record %s", action)


async def _authenticate(request: Request, credential: str) -> Principal:
    """Check a pasted key or token exactly as the API would, as if it had come in the Authorization header."""
    authenticator = request.app.state.authenticator
    if not isinstance(authenticator, Authenticator):
        raise RuntimeError("app.state.authenticator is not set: create_app must build the Authenticator")
    # Header bytes are ASCII: anything else cannot be a valid credential, and "?" keeps it invalid.
    header = b"Bearer " + credential.encode("ascii", "replace")
    probe = Request({**request.scope, "headers": [(b"authorization", header)]})
    return await authenticator.authenticate(probe)


# ---- sign-in and sign-out --------------------------------------------------------------------------------------


def _signin_page(request: Request, token: str, *, status: int = 200, error: str | None = None,
                 headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    response = _render(request, "signin.html", status=status, headers=headers, signin_token=token, error=error)
    _set_cookie(request, response, SIGNIN_COOKIE, token, max_age=3600)
    return response


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    if await _session(request) is not None:
        return RedirectResponse(PREFIX, status_code=303)
    return _signin_page(request, request.cookies.get(SIGNIN_COOKIE) or new_token())


@router.post("/signin")
async def signin(request: Request) -> Response:
    dashboard = _dashboard(request)
    form = await request.form()
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not tokens_match(expected, _text(form, "csrf_token")):
        return _csrf_refused(request, None)
    assert expected is not None
    client = client_address(request)
    wait = await dashboard.throttle.retry_after(client)
    if wait is not None:
        return _signin_page(
            request, expected, status=429, headers={"Retry-After": str(int(wait) + 1)},
            error=f"Too many failed sign-ins from your address. Try again in {int(wait) + 1} seconds.",
        )  # fmt: skip
    if dashboard.settings.auth == "off":
        principal = DEV_PRINCIPAL
    else:
        credential = _text(form, "credential").strip()
        if not credential:
            return _signin_page(request, expected, status=400, error="Paste an API key or a token to sign in.")
        try:
            principal = await _authenticate(request, credential)
        except Unauthorized:
            await dashboard.throttle.failed(client)
            return _signin_page(request, expected, status=401, error="That API key or token was not accepted.")
        except AuthThrottled as exc:
            seconds = int(exc.retry_after or 1) + 1
            return _signin_page(
                request, expected, status=429, headers={"Retry-After": str(seconds)},
                error=f"Too many refused credentials from your address. Try again in {seconds} seconds.",
            )  # fmt: skip
    session = await dashboard.sessions.create(principal)
    await _audit(request, principal, "dashboard.signed_in")
    response = RedirectResponse(PREFIX, status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, session.id, max_age=int(dashboard.sessions.ttl_seconds))
    _delete_cookie(request, response, SIGNIN_COOKIE)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    posted = await _form_session(request)
    if isinstance(posted, Response):
        return posted
    session = posted.session
    await _dashboard(request).sessions.revoke(session.id)
    await _audit(request, session.principal, "dashboard.signed_out")
    response = _to_signin()
    _delete_cookie(request, response, SESSION_COOKIE)
    return response


# ---- the user's view -------------------------------------------------------------------------------------------


def _page_number(request: Request) -> int | None:
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        return None
    return int(raw)


CHECKBOXES = ("special_category_cloud_opt_in", "analytics_opt_in", "do_not_share")


def _form_values(current: PrivacySettings | None, submitted: FormData | None) -> dict[str, Any]:
    """What the settings form shows: the stored settings, or what the user just sent when it was refused."""
    if current is None:
        return {}
    if submitted is None:
        values: dict[str, Any] = current.editable()
        values["region"] = current.region or ""
        return values
    values = {name: _text(submitted, name) for name in ("processing_mode", "region", "retention_days")}
    values.update({name: submitted.get(name) == "on" for name in CHECKBOXES})
    return values


async def _user_page(
    request: Request,
    session: Session,
    page: int,
    *,
    status: int = 200,
    settings_error: str | None = None,
    submitted: FormData | None = None,
) -> Response:
    services = _services(request)
    user_id = session.principal.user_id
    records = await services.requests.list(user_id=user_id, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    privacy = services.privacy
    current = await privacy.get(user_id) if privacy is not None else None
    regions = privacy.available_regions if privacy is not None else []
    if current is not None and current.region and current.region not in regions:
        regions = sorted([*regions, current.region])
    values = _form_values(current, submitted)
    audit = services.audit
    access = await audit.latest_about(user_id, (VIEWED, ACTED_FOR), ACCESS_ROWS) if audit is not None else []
    if values.get("region") and values["region"] not in regions:
        regions = sorted([*regions, values["region"]])
    devices = await services.devices.list(user_id) if services.devices is not None else []
    return _render(
        request,
        "user.html",
        session=session,
        status=status,
        rows=[request_row(record) for record in records[:PAGE_SIZE]],
        access=[access_row(event) for event in access],
        devices=devices,
        page=page,
        has_next=len(records) > PAGE_SIZE,
        privacy=current,
        privacy_updated=when(current.updated_at if current is not None else None),
        regions=regions,
        region_notice=privacy.region_notice(current.region) if privacy and current else None,
        values=values,
        modes=PROCESSING_MODES,
        min_retention=MIN_RETENTION_DAYS,
        max_retention=MAX_RETENTION_DAYS,
        saved=request.query_params.get("saved") == "1",
        settings_error=settings_error,
    )


@router.get("")
async def user_view(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_signin()
    page = _page_number(request)
    if page is None:
        return _message(request, session, 400, "No such page", f"Pages are numbered from 1 to {MAX_PAGE}.")
    return await _user_page(request, session, page)


def _settings_changes(form: FormData) -> tuple[dict[str, Any], int | None]:
    """The submitted settings as PrivacyService.update changes, and the version the form was built from."""
    mode = _text(form, "processing_mode")
    if mode not in PROCESSING_MODES:
        raise ValueError(f"Processing mode must be one of: {', '.join(PROCESSING_MODES)}.")
    retention = _text(form, "retention_days").strip()
    if not retention.isdigit() or not MIN_RETENTION_DAYS <= int(retention) <= MAX_RETENTION_DAYS:
        raise ValueError(f"Retention must be whole days, {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}.")
    region = _text(form, "region").strip().lower()
    version = _text(form, "version").strip()
    changes: dict[str, Any] = {
        "processing_mode": mode,
        "region": region or None,
        "retention_days": int(retention),
        **{name: form.get(name) == "on" for name in CHECKBOXES},
    }
    return changes, int(version) if version.isdigit() else None


@router.post("/settings")
async def save_settings(request: Request) -> Response:
    posted = await _form_session(request, "privacy")
    if isinstance(posted, Response):
        return posted
    session, form, privacy = posted.session, posted.form, posted.service
    principal = session.principal
    try:
        changes, version = _settings_changes(form)
    except ValueError as exc:
        return await _user_page(request, session, 1, status=400, settings_error=str(exc), submitted=form)
    try:
        await privacy.update(
            principal.user_id, changes, actor=principal.user_id, actor_role=principal.role.value,
            expected_version=version,
        )  # fmt: skip
    except UpcoachError as exc:
        return await _user_page(request, session, 1, status=exc.status, settings_error=exc.message,
                                submitted=form)  # fmt: skip
    return RedirectResponse(PREFIX + "?saved=1#settings", status_code=303)


@router.post("/devices/{device_id}/revoke")
async def revoke_device(request: Request, device_id: str) -> Response:
    """The user revokes one of their phones: its key stops working at once."""
    posted = await _form_session(request, "devices")
    if isinstance(posted, Response):
        return posted
    session, devices = posted.session, posted.service
    principal = session.principal
    try:
        await devices.revoke(device_id, principal.user_id, actor=principal.user_id, actor_role=principal.role.value)
    except UpcoachError as exc:
        return _message(request, session, exc.status, "Device not revoked", exc.message)
    return RedirectResponse(PREFIX + "?revoked=1#devices", status_code=303)


# ---- the admin view --------------------------------------------------------------------------------------------


async def _model_status(services: Services) -> tuple[str, str]:
    if services.local is not None:
        health = await services.local.health()
        return ("ready" if health.ok else "unavailable"), health.reason
    return "unavailable", services.local_problem or ""


async def _breaker_state(services: Services) -> str:
    breaker = services.hybrid.cloud_breaker
    if breaker is None:
        return "no cloud configured"
    return str(await breaker.state()).replace("_", "-")


@router.get("/admin")
async def admin_view(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_signin()
    authenticator = request.app.state.authenticator
    try:
        # Through the Authenticator, so a refused role is audited like any other.
        await authenticator.authorize(request, session.principal, VIEWER_ROLES)
    except Forbidden:
        return _message(request, session, 403, "Admins only", "The service view needs the admin or auditor role.")
    range_key = request.query_params.get("range", "24h")
    if range_key not in RANGES:
        return _message(request, session, 400, "Unknown range", f"Choose one of: {', '.join(RANGES)}.")
    span, granularity = RANGES[range_key]
    since = datetime.now(UTC) - span
    services = _services(request)
    repository = DashboardRepository(services.db)
    summary = await services.requests.summary(since=since)
    timeline = await repository.timeline(since=since, granularity=granularity)
    latency = await repository.latency_percentiles(since=since)
    ratings = await services.ratings.summary(since=since) if services.ratings is not None else None
    on_devices = await services.sync.device_totals(since) if services.sync is not None else (0.0, 0.0)
    quality_chart, quality_rows = quality(ratings) if ratings is not None else (None, [])
    model_state, model_reason = await _model_status(services)
    return _render(
        request,
        "admin.html",
        session=session,
        ranges=list(RANGES),
        range_key=range_key,
        summary=summary,
        incurred=usd(summary.cost_incurred_usd),
        avoided=usd(summary.cost_avoided_usd),
        equivalent=usd(summary.cloud_equivalent_usd),
        charts=admin_charts(timeline, latency),
        shares=device_shares(summary, *on_devices),
        latency=latency,
        timeline=timeline,
        ratings=ratings,
        quality_chart=quality_chart,
        quality_rows=quality_rows,
        usd=usd,
        model_id=services.local_model_id,
        model_state=model_state,
        model_reason=model_reason,
        breaker_state=await _breaker_state(services),
        cloud_model=services.settings.cloud_model if services.settings.cloud_base_url else None,
    )
