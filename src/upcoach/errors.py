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
