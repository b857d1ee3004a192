"""Who is calling, and may they: API keys, JWT bearer tokens from the UpCoach backend, or dev mode (auth off).

Credentials come in ``Authorization: Bearer <API key or JWT>`` or, failing that, ``X-API-Key: <API key>``. Routes
declare the roles they admit with ``Depends(require(...))``; admin passes every role check. Refused credentials and
refused roles go to an ``AuthFailureHook`` (security/refusals.py aggregates them into the audit trail) and count
against the client address: past ``UPCOACH_AUTH_REFUSALS_PER_MINUTE`` the address is refused (429) before its
credentials are looked at. A request without any credentials is neither, so health checkers and browsers count
for nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import Request

from upcoach.config import Settings
from upcoach.errors import AuthThrottled, Forbidden, Unauthorized
from upcoach.security.keys import ApiKeys, Refused, Role, looks_like_api_key
from upcoach.security.throttle import FailureThrottle

log = logging.getLogger(__name__)

Via = Literal["api_key", "jwt", "dev"]

# Clock skew tolerated between the token issuer and this server.
JWT_LEEWAY_SECONDS = 30
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_JWT_SECRET_BYTES = 32


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``expires_at`` (epoch seconds): when the credential stops being valid, for a token."""

    user_id: str
    role: Role
    key_id: str | None = None
    via: Via = "api_key"
    expires_at: float | None = field(default=None, compare=False)


DEV_PRINCIPAL = Principal("dev", Role.admin, None, "dev")


@dataclass(frozen=True)
class AuthFailure:
    """A refused request, for the audit trail. ``user_id``/``role`` are known only when the credentials named a
    real account (a revoked key, a wrong role); never from an unverified token."""

    reason: str
    status: int
    method: str
    path: str
    client: str
    key_id: str | None = None
    user_id: str | None = None
    role: str | None = None


AuthFailureHook = Callable[[AuthFailure], Awaitable[None]]


def announce_auth_mode(settings: Settings) -> None:
    """Log, once at startup, how requests are authenticated; loudly when they are not."""
    if settings.auth == "off":
        log.warning(
            "authentication is OFF (UPCOACH_AUTH=off): every request acts as the admin 'dev'. "
            "Use this for local development only, never on a reachable address."
        )
        return
    methods = ["API keys"]
    if settings.jwt_secret is not None:
        methods.append("HS256 tokens")
    if settings.jwt_public_key is not None:
        methods.append("RS256/ES256 tokens")
    log.info("authentication on: %s", ", ".join(methods))


def _public_key(value: str) -> tuple[str, Any]:
    """(algorithm, key) for a PEM public key given inline or as a file path."""
    pem = value if value.lstrip().startswith("-----BEGIN") else Path(value).expanduser().read_text()
    key = load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256", key
    raise ValueError("UPCOACH_JWT_PUBLIC_KEY must be an RSA or EC P-256 public key")


class JwtVerifier:
    """Verifies bearer tokens signed by the UpCoach backend. Claims: ``sub`` = user id, ``role`` (default user)."""

    def __init__(self, settings: Settings) -> None:
        # One key per algorithm, chosen by the token's header: a public key is never tried as an HMAC secret.
        self._keys: dict[str, Any] = {}
        if settings.jwt_secret is not None:
            secret = settings.jwt_secret.get_secret_value().encode()
            if len(secret) < MIN_JWT_SECRET_BYTES:
                raise ValueError(f"UPCOACH_JWT_SECRET must have at least {MIN_JWT_SECRET_BYTES} bytes")
            self._keys["HS256"] = secret
        if settings.jwt_public_key is not None:
            algorithm, key = _public_key(settings.jwt_public_key)
            self._keys[algorithm] = key
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def verify(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(str(algorithm))
            if key is None:
                raise Refused("token_algorithm")
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self._audience,
                issuer=self._issuer,
                leeway=JWT_LEEWAY_SECONDS,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Refused("token_expired", message="token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Refused("token_audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise Refused("token_issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise Refused("token_signature") from exc
        except jwt.InvalidTokenError as exc:
            raise Refused("token_invalid") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= 128:
            raise Refused("token_subject")
        try:
            role = Role(claims.get("role", Role.user.value))
        except ValueError as exc:
            raise Refused("token_role", user_id=subject) from exc
        return Principal(subject, role, None, "jwt", float(claims["exp"]))


def presents_credentials(request: Request) -> bool:
    """Whether the request carries any credentials at all (checked or not)."""
    return bool(request.headers.get("authorization", "").strip() or request.headers.get("x-api-key", "").strip())


def _credentials(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Refused("unsupported_scheme", message="use Authorization: Bearer <API key or token>")
        return value.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    return api_key or None


class Authenticator:
    """Turns a request into a Principal (``authenticate``) and checks its role (``authorize``)."""

    def __init__(
        self,
        settings: Settings,
        keys: ApiKeys,
        *,
        on_failure: AuthFailureHook | None = None,
        clock: Callable[[], float] = time.time,
        redis: object | None = None,
    ) -> None:
        self.clock = clock  # epoch seconds; injectable so token expiry can be tested without waiting
        self.throttle = FailureThrottle(
            attempts=settings.auth_refusals_per_minute, window_seconds=60.0, redis=redis, name="auth"
        )
        self._enabled = settings.auth == "on"
        self._keys = keys
        self._jwt = JwtVerifier(settings)
        self._on_failure = on_failure

    @property
    def enabled(self) -> bool:
        """False in local development (UPCOACH_AUTH=off): every request is the admin ``dev``."""
        return self._enabled

    async def authenticate(self, request: Request) -> Principal:
        """The caller; raises Unauthorized (401) when credentials are missing, invalid, expired or revoked."""
        if not self._enabled:
            return DEV_PRINCIPAL
        wait = await self.throttle.retry_after(client_address(request))
        if wait is not None:
            await self._report(_failure(request, "throttled", 429, None, None, None), count=False)
            raise AuthThrottled("too many refused credentials from your address; wait and try again", retry_after=wait)
        try:
            token = _credentials(request)
            if token is None:
                raise Unauthorized("missing credentials: send Authorization: Bearer <API key> or X-API-Key")
            if looks_like_api_key(token):
                key = await self._keys.verify(token)
                return Principal(key.user_id, key.role, key.id, "api_key")
            if self._jwt.enabled and token.count(".") == 2:
                return self._jwt.verify(token)
            raise Refused("unknown_credential")
        except Refused as exc:
            await self._report(_failure(request, exc.reason, 401, exc.key_id, exc.user_id, exc.role))
            raise

    async def still_valid(self, principal: Principal) -> bool:
        """Whether a principal authenticated earlier (a dashboard session) may still act: its API key is not
        revoked, its token has not expired. One read per call, never cached, so revocation applies at once."""
        if principal.via == "dev":
            return not self._enabled
        if principal.via == "jwt":
            return principal.expires_at is not None and self.clock() < principal.expires_at + JWT_LEEWAY_SECONDS
        return principal.key_id is not None and await self._keys.active(principal.key_id)

    async def authorize(self, request: Request, principal: Principal, roles: Collection[Role]) -> None:
        """Raise Forbidden (403) unless the principal has one of ``roles``. Admin passes every check."""
        if principal.role is Role.admin or principal.role in roles:
            return
        await self._report(_failure(request, "role", 403, principal.key_id, principal.user_id, principal.role.value))
        needed = " or ".join(sorted(role.value for role in roles))
        raise Forbidden(f"this needs the {needed} role; the caller has {principal.role.value}")

    async def _report(self, failure: AuthFailure, *, count: bool = True) -> None:
        if count:
            await self.throttle.failed(failure.client)
        if self._on_failure is None:
            return
        try:
            await self._on_failure(failure)
        except Exception:
            # An audit outage must not turn a 401 into a 500, nor let the refused caller through.
            log.exception("could not record refused request %s %s", failure.method, failure.path)


def _failure(
    request: Request, reason: str, status: int, key_id: str | None, user_id: str | None, role: str | None
) -> AuthFailure:
    # The path only, never the query string: it may carry anything the caller put there.
    return AuthFailure(reason, status, request.method, request.url.path, client_address(request), key_id, user_id, role)


def client_address(request: Request) -> str:
    """The address refusals are counted against: the TCP peer, or what a trusted proxy said it forwarded for
    (create_app installs that middleware only when UPCOACH_TRUSTED_PROXIES names the proxies)."""
    return request.client.host if request.client else "unknown"


def principal_of(request: Request) -> Principal | None:
    """The principal ``require`` put on this request, if any."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: authenticate (once per request), check the role, leave ``request.state.principal``.

    Without roles any authenticated caller passes. The Authenticator is ``request.app.state.authenticator``.
    """
    allowed = frozenset(roles)

    async def authenticated(request: Request) -> Principal:
        authenticator = getattr(request.app.state, "authenticator", None)
        if not isinstance(authenticator, Authenticator):
            # Fail closed: a route that asks for authentication must never run without it.
            raise RuntimeError("app.state.authenticator is not set: create_app must build the Authenticator")
        principal = principal_of(request)
        if principal is None:
            principal = await authenticator.authenticate(request)
            request.state.principal = principal
        if allowed:
            await authenticator.authorize(request, principal, allowed)
        return principal

    return authenticated
