"""The one exception tree of CoE Router. Every entry point maps these in one place
(HTTP: deploy/api/errors.py, OpenAI error JSON; CLI: one line on stderr, non-zero exit).

CoeError                      → 500 internal_error (never raised directly)
  ├ BadRequest                → 400 invalid_request_error   (CLI exit 2)
  │   ├ RoutingError          → 400 (unknown policy, bad routing options)
  │   ├ RequestTimeout        → 408 (the client sent its body too slowly: COE_BODY_TIMEOUT_S)
  │   ├ PayloadTooLarge       → 413 (request body over COE_MAX_BODY_BYTES, refused before parsing)
  │   ├ ExpertRejected        → the expert's own 4xx, relayed (status, type, message, param, code)
  │   └ UnknownBackend        → 400 (unknown embedder backend)
  ├ Unauthorized              → 401 authentication_error
  ├ Forbidden                 → 403 permission_error
  ├ NotFound                  → 404 not_found_error
  ├ Conflict                  → 409 conflict_error          (duplicate names)
  ├ RateLimited               → 429 rate_limit_error        (expert queue full; a key's rpm/tpm: retry-after)
  │   └ QuotaExceeded         → 429 insufficient_quota      (a key's budget is spent)
  ├ ArtifactError             → 500 router artifact missing, corrupt or incompatible
  ├ StartupError              → 500 (CLI exit 1) `coe up` cannot start: port taken, Ray gone, disk full
  ├ ShuttingDown              → 503 the replica is draining (graceful shutdown); retry elsewhere
  ├ RegistryUnavailable       → 503 database unreachable
  ├ NoHealthyExpert           → 503 no enabled, healthy expert can serve
  │   └ ExpertUnavailable     → 503 one expert cannot take a call now (circuit open, or removed): the pool
  │                                 tries the next candidate, so a client sees this only as NoHealthyExpert
  └ ExpertError               → 502 upstream expert failed
      ├ ExpertTimeout         → 504
      ├ ExpertConnectionError → 502 (refused / reset)
      ├ ExpertHTTPError       → 502 (4xx/5xx from the expert; .upstream_status keeps the expert's code)
      └ ExpertBadResponse     → 502 (malformed JSON / SSE)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: OpenAI's error type of each status; a class that sets its status (a keyword of its class line) takes the
#: type from here unless it names its own (`error_type=`), else keeps its parent's
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable_error",
}


class CoeError(Exception):
    """Base of every error CoE Router raises on purpose. A subclass states its HTTP status and OpenAI
    error type on its class line (`class NotFound(CoeError, status=404)`): see ERROR_TYPES."""

    status: int = 500
    error_type: str = "internal_error"
    #: seconds for an HTTP `retry-after` header, when the error says when to come back
    retry_after_s: float | None = None
    #: the failed expert attempts before this error, when the expert pool raised it ({expert, error, message,
    #: status?} each: experts.attempt.Attempt.as_dict())
    attempts: tuple[Mapping[str, object], ...] = ()

    def __init_subclass__(cls, *, status: int | None = None, error_type: str | None = None) -> None:
        super().__init_subclass__()
        if status is not None:
            cls.status = status
            cls.error_type = ERROR_TYPES.get(status, cls.error_type)
        if error_type is not None:
            cls.error_type = error_type

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if retry_after_s is not None:
            #: seconds after which a retry may succeed (the HTTP `retry-after` header)
            self.retry_after_s = retry_after_s

    def body(self) -> dict[str, object]:
        """This error as OpenAI's error JSON (error_body)."""
        return error_body(self.message, self.error_type, self.param, self.code)


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """OpenAI's error JSON, `{"error": {"message", "type", "param", "code"}}`: the one builder, used by the
    service (deploy/api/errors.py) and the local expert server (experts/local_server.py)."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class BadRequest(CoeError, status=400):
    """The request is invalid; `param` names the field."""


class RoutingError(BadRequest):
    """Unknown policy or aggregation mode, bad routing options, a budget no expert fits."""


class PayloadTooLarge(BadRequest, status=413):
    """A request body over COE_MAX_BODY_BYTES, refused before it is parsed."""


class RequestTimeout(BadRequest, status=408):
    """The client sent its body slower than COE_BODY_TIMEOUT_S allows."""


class ExpertRejected(BadRequest):
    """An expert refused the request itself (its own 400/413/422): the client sees that status and message,
    as it would calling the expert directly. Raised only after failover found no expert that accepts it."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        error_type: str = "invalid_request_error",
        expert: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        self.error_type = error_type
        self.expert = expert


class UnknownBackend(BadRequest):
    """An embedder backend name the router does not know."""


class Unauthorized(CoeError, status=401):
    """No API key, or one the registry does not know."""


class Forbidden(CoeError, status=403):
    """The key lacks the scope (admin), or the admin API is open to loopback only."""


class NotFound(CoeError, status=404):
    """An unknown model, expert, category, key or stored response."""


class Conflict(CoeError, status=409):
    """A name (expert, category) or response id that exists already."""


class RateLimited(CoeError, status=429):
    """`retry_after_s`: when a retry may succeed, where known (a key's rpm/tpm window)."""


class QuotaExceeded(RateLimited, error_type="insufficient_quota"):
    """The key's budget for this period is spent."""


class ArtifactError(CoeError, error_type="router_artifact_error"):
    """The router artifact is missing, corrupt or built for another version."""


class StartupError(CoeError, error_type="startup_error"):
    """Found by `coe up`'s checks before anything starts (deploy/ops/preflight.py)."""


class ShuttingDown(CoeError, status=503):
    """This replica is draining (graceful shutdown): the client retries elsewhere."""


class RegistryUnavailable(CoeError, status=503):
    """The registry database cannot be reached."""


class NoHealthyExpert(CoeError, status=503):
    """No enabled, healthy expert can serve the request."""


class ExpertUnavailable(NoHealthyExpert):
    """One expert cannot take a call now: its circuit breaker is open, or it left the registry. `reason` is
    what the pool records in the request's attempts ("circuit_open", "removed")."""

    def __init__(self, message: str, *, expert: str, reason: str) -> None:
        super().__init__(message)
        self.expert = expert
        self.reason = reason


class ExpertError(CoeError, status=502):
    #: whether retrying the same expert may succeed (timeouts, refused connections, 5xx, 429)
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        expert: str | None = None,
        status_code: int | None = None,
        retryable: bool | None = None,
        **kw: Any,  # CoeError's param, code, retry_after_s
    ) -> None:
        super().__init__(message, **kw)
        self.expert = expert
        self.upstream_status = status_code
        if retryable is not None:
            self.retryable = retryable


class ExpertTimeout(ExpertError, status=504):
    retryable = True


class ExpertConnectionError(ExpertError):
    retryable = True


class ExpertHTTPError(ExpertError):
    #: the expert's own OpenAI error object ({message, type, param, code}) when its body had one
    upstream_error: dict[str, object] | None = None

    @property
    def rejects_request(self) -> bool:
        """A 4xx about the request itself (not auth, routing or load): relayed to the client."""
        return self.upstream_status in (400, 413, 422) and not self.context_exceeded

    @property
    def context_exceeded(self) -> bool:
        """The expert's context window is too small for this request (OpenAI's and vLLM's wording)."""
        if self.upstream_status not in (400, 413, 422):
            return False
        err = self.upstream_error or {}
        text = f"{err.get('code', '')} {err.get('message', '')} {self.message}".lower()
        return "context_length_exceeded" in text or "maximum context length" in text


class ExpertBadResponse(ExpertError):
    """The expert's answer is not the JSON or SSE the API promises."""
