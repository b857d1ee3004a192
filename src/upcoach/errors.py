"""One exception tree for the service. api/errors.py maps it to HTTP, in OpenAI's error shape, in one place."""

from __future__ import annotations


class UpcoachError(Exception):
    """Base class. ``status`` and ``code`` say how the API answers; ``param`` names the offending field."""

    status = 500
    code = "internal_error"
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class InvalidRequest(UpcoachError):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class PromptInjection(InvalidRequest):
    """The request was refused by the prompt-injection defence (OWASP LLM01)."""

    code = "prompt_injection"


class NotFound(UpcoachError):
    status = 404
    code = "not_found"
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(UpcoachError):
    status = 413
    code = "payload_too_large"
    type = "invalid_request_error"


class Overloaded(UpcoachError):
    """The backend's queue is full: try again later."""

    status = 429
    code = "queue_full"
    type = "rate_limit_error"


class RateLimited(UpcoachError):
    """This caller sent more requests than its rate limit allows."""

    status = 429
    code = "rate_limited"
    type = "rate_limit_error"


class Unavailable(UpcoachError):
    """The backend cannot serve now (model not loaded, engine stopped)."""

    status = 503
    code = "unavailable"
    type = "server_error"


class SecurityCheckFailed(UpcoachError):
    """A check that must pass before any text may reach a model (prompt injection, special-category data, PII
    redaction, the user's privacy settings) could not run: the request is refused, never let through unchecked.
    Not an ``Unavailable``, so no fallback (offline library answer) takes over either."""

    status = 503
    code = "security_check_failed"
    type = "server_error"

    def __init__(self, check: str) -> None:
        super().__init__(f"the {check} check could not run, so the request was refused; try again later")
        self.check = check


class LocalUnavailable(Unavailable):
    """Privacy requires the local model and it cannot answer: never a reason to use the cloud."""

    code = "local_unavailable"


class BackendError(UpcoachError):
    """A remote backend (cloud or self-hosted pool) failed. ``before_first_token`` says whether the caller
    may still answer the request elsewhere without the user seeing a partial answer."""

    status = 502
    code = "backend_error"
    type = "server_error"

    def __init__(self, message: str, *, backend: str = "", before_first_token: bool = True, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.backend = backend
        self.before_first_token = before_first_token


class BackendTimeout(BackendError):
    status = 504
    code = "backend_timeout"


class BackendRateLimited(BackendError):
    status = 429
    code = "backend_rate_limited"
    type = "rate_limit_error"


class ModelStoreError(UpcoachError):
    code = "model_store_error"


class ChecksumMismatch(ModelStoreError):
    status = 400
    code = "checksum_mismatch"
    type = "invalid_request_error"


class FetchFailed(ModelStoreError):
    status = 502
    code = "fetch_failed"


# --- model store: registry, encryption at rest (#6 part A) ---


class ModelInUse(ModelStoreError):
    """The active model cannot be deleted: activate another version first."""

    status = 409
    code = "model_in_use"
    type = "invalid_request_error"


class ModelExists(ModelStoreError):
    status = 409
    code = "model_exists"
    type = "invalid_request_error"


class ModelNotReady(ModelStoreError):
    """Only a downloaded and verified version can be activated or read."""

    status = 409
    code = "model_not_ready"
    type = "invalid_request_error"


class ModelTampered(ModelStoreError):
    """An encrypted model file failed authentication (edited, truncated, extended or reordered): refused."""

    status = 503
    code = "model_tampered"


class ModelKeyUnavailable(ModelStoreError):
    """The file names an encryption key this server does not have."""

    status = 503
    code = "model_key_unavailable"


class StorageFull(ModelStoreError):
    """No space left for a model file: the download was abandoned and its partial file removed."""

    status = 507
    code = "insufficient_storage"


class JobNotFound(NotFound):
    code = "job_not_found"


class Unauthorized(UpcoachError):
    """No usable credentials. ``headers`` must reach the client: RFC 9110 requires WWW-Authenticate on a 401."""

    status = 401
    code = "unauthorized"
    type = "authentication_error"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(UpcoachError):
    """Valid credentials whose role may not do this."""

    status = 403
    code = "forbidden"
    type = "permission_error"


# --- experiments, voice journal, ratings (#8 part B) ---


class ExperimentStopped(UpcoachError):
    """The experiment was stopped: it takes no more events (assignments fall back to the control)."""

    status = 409
    code = "experiment_stopped"
    type = "invalid_request_error"


class ExperimentExists(UpcoachError):
    status = 409
    code = "experiment_exists"
    type = "invalid_request_error"


class DataKeyUnavailable(Unavailable):
    """A user's data key cannot be unwrapped: the configured master key is not the one that wrapped it."""

    code = "data_key_unavailable"


# --- privacy settings (#7 part A) ---


class VersionConflict(UpcoachError):
    """Optimistic concurrency: the caller edited a version that someone else has replaced since."""

    status = 409
    code = "version_conflict"
    type = "invalid_request_error"


# --- model updates, device distribution, version A/B (#6 part B) ---


class ModelStateConflict(UpcoachError):
    """The model lifecycle is not in a state that allows this now (nothing to roll back to, an update or A/B test
    already running)."""

    status = 409
    code = "model_state_conflict"
    type = "invalid_request_error"


class SmokeTestFailed(ModelStoreError):
    """A new version loaded but did not produce a sane answer: it is not swapped in."""

    status = 422
    code = "smoke_test_failed"
    type = "invalid_request_error"


class RangeNotSatisfiable(UpcoachError):
    """An HTTP Range outside the file (RFC 9110 15.5.17): the answer names the real size in Content-Range."""

    status = 416
    code = "range_not_satisfiable"
    type = "invalid_request_error"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, param="Range")
        self.headers = {"Content-Range": f"bytes */{size}"}


# --- who may act for whom, abuse from outside (#12, part b) ---


class GrantRequired(Forbidden):
    """A coach named a client who has no live grant of this scope to them (never given, expired or revoked)."""

    code = "grant_required"


class AccessNotRecorded(Unavailable):
    """Another user's data may be touched only with an audit row; the row could not be written, so: refused."""

    code = "access_not_recorded"


class AuthThrottled(RateLimited):
    """Too many refused credentials from this client address: it waits before any more are checked."""

    code = "auth_throttled"


class SourceNotAllowed(ModelStoreError):
    """A model download (or one of its redirects) led to an address that is not public (loopback, private,
    link-local/cloud metadata, ...) and UPCOACH_MODEL_SOURCE_ALLOW does not name it."""

    status = 400
    code = "source_not_allowed"
    type = "invalid_request_error"


# --- erasure fences (#12) ---


class DataErased(UpcoachError):
    """The user's data was erased while this request was running: what it would have stored is not written."""

    status = 409
    code = "data_erased"
    type = "invalid_request_error"


# --- devices, offline sync, idempotent POSTs (#19) ---


class InvalidIdempotencyKey(InvalidRequest):
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(UpcoachError):
    """The Idempotency-Key was used before for a different request (another path or body): refused, not replayed."""

    status = 422
    code = "idempotency_key_reused"
    type = "invalid_request_error"


class IdempotencyInProgress(UpcoachError):
    """The first request with this Idempotency-Key is still running: retry after it finished."""

    status = 409
    code = "idempotency_in_progress"
    type = "invalid_request_error"


# --- structured outputs and tool calls (#16) ---


class InvalidOutput(BackendError):
    """The model's answer does not follow the requested schema or tool signature (a cloud that ignored it)."""

    code = "invalid_output"
