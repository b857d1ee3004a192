"""Errors as exceptions named after the API's error codes (``{"error": {"code": ...}}``).

``error_for`` picks the class for a code; a code this SDK does not know yet becomes the class for its HTTP status,
so an older app still handles a newer server's errors by status.
"""

from __future__ import annotations

from typing import Any


class UpcoachError(Exception):
    """Base of everything the SDK raises about an API answer. ``code``: the API's machine-readable reason."""

    code = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or type(self).code
        self.param = param
        self.retry_after = retry_after
        self.body = body


class ConnectionFailed(UpcoachError):
    """The server could not be reached (offline, connection cut): nothing came back."""

    code = "connection_failed"


class VerificationFailed(UpcoachError):
    """Something downloaded failed its check on the device (sha256, Ed25519 signature): refused, never used."""

    code = "verification_failed"


class InvalidRequest(UpcoachError):
    code = "invalid_request"


class Unauthorized(UpcoachError):
    code = "unauthorized"


class Forbidden(UpcoachError):
    code = "forbidden"


class NotFound(UpcoachError):
    code = "not_found"


class Conflict(UpcoachError):
    code = "conflict"


class RateLimited(UpcoachError):
    code = "rate_limited"


class Unavailable(UpcoachError):
    code = "unavailable"


class ServerError(UpcoachError):
    code = "internal_error"


# The API's codes (src/upcoach/errors.py and api/errors.py on the server), each under the class of its status.


class InvalidJson(InvalidRequest):
    code = "invalid_json"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class PromptInjection(InvalidRequest):
    code = "prompt_injection"


class ChecksumMismatch(InvalidRequest):
    code = "checksum_mismatch"


class SourceNotAllowed(InvalidRequest):
    code = "source_not_allowed"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class InvalidIdempotencyKey(InvalidRequest):
    code = "invalid_idempotency_key"


class ModelNotFound(NotFound):
    code = "model_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class GrantRequired(Forbidden):
    code = "grant_required"


class ModelInUse(Conflict):
    code = "model_in_use"


class ModelExists(Conflict):
    code = "model_exists"


class ModelNotReady(Conflict):
    code = "model_not_ready"


class ModelStateConflict(Conflict):
    code = "model_state_conflict"


class ExperimentStopped(Conflict):
    code = "experiment_stopped"


class ExperimentExists(Conflict):
    code = "experiment_exists"


class VersionConflict(Conflict):
    code = "version_conflict"


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"


class DataErased(Conflict):
    """The user's data was erased while this request ran: what it would have stored was not written."""

    code = "data_erased"


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"


class SmokeTestFailed(InvalidRequest):
    code = "smoke_test_failed"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"


class RangeNotSatisfiable(InvalidRequest):
    code = "range_not_satisfiable"


class QueueFull(RateLimited):
    code = "queue_full"


class AuthThrottled(RateLimited):
    code = "auth_throttled"


class BackendRateLimited(RateLimited):
    code = "backend_rate_limited"


class SecurityCheckFailed(Unavailable):
    code = "security_check_failed"


class LocalUnavailable(Unavailable):
    code = "local_unavailable"


class DataKeyUnavailable(Unavailable):
    code = "data_key_unavailable"


class AccessNotRecorded(Unavailable):
    code = "access_not_recorded"


class ModelTampered(Unavailable):
    code = "model_tampered"


class ModelKeyUnavailable(Unavailable):
    code = "model_key_unavailable"


class BackendError(ServerError):
    code = "backend_error"


class InvalidOutput(ServerError):
    code = "invalid_output"


class BackendTimeout(ServerError):
    code = "backend_timeout"


class FetchFailed(ServerError):
    code = "fetch_failed"


class ModelStoreError(ServerError):
    code = "model_store_error"


class InsufficientStorage(ServerError):
    code = "insufficient_storage"


class MethodNotAllowed(InvalidRequest):
    code = "method_not_allowed"


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


ERRORS: dict[str, type[UpcoachError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        RateLimited,
        Unavailable,
        ServerError,
        InvalidJson,
        ContextLengthExceeded,
        PromptInjection,
        ChecksumMismatch,
        SourceNotAllowed,
        InvalidIdempotencyKey,
        UnsupportedParameter,
        ModelNotFound,
        JobNotFound,
        GrantRequired,
        ModelInUse,
        ModelExists,
        ModelNotReady,
        ModelStateConflict,
        ExperimentStopped,
        ExperimentExists,
        VersionConflict,
        IdempotencyInProgress,
        DataErased,
        IdempotencyKeyReused,
        SmokeTestFailed,
        PayloadTooLarge,
        RangeNotSatisfiable,
        QueueFull,
        AuthThrottled,
        BackendRateLimited,
        SecurityCheckFailed,
        LocalUnavailable,
        DataKeyUnavailable,
        AccessNotRecorded,
        ModelTampered,
        ModelKeyUnavailable,
        BackendError,
        InvalidOutput,
        BackendTimeout,
        FetchFailed,
        ModelStoreError,
        InsufficientStorage,
        MethodNotAllowed,
        UnsupportedMediaType,
    )
}

_BY_STATUS: dict[int, type[UpcoachError]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: InvalidRequest,
    416: InvalidRequest, 422: InvalidRequest, 429: RateLimited, 503: Unavailable,
}  # fmt: skip


def error_for(status: int, body: Any, retry_after: float | None = None) -> UpcoachError:
    """The exception for an error answer: by its code, else by its status."""
    detail = body.get("error") if isinstance(body, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    code = detail.get("code") if isinstance(detail.get("code"), str) else None
    message = str(detail.get("message") or f"HTTP {status}")
    cls = ERRORS.get(code or "") or _BY_STATUS.get(status) or (ServerError if status >= 500 else InvalidRequest)
    param = detail.get("param") if isinstance(detail.get("param"), str) else None
    return cls(message, status=status, code=code, param=param, retry_after=retry_after, body=body)
