"""The one exception hierarchy of Sovereign.

Every error a user can cause or meet is one of these classes. Each class carries the HTTP
status and the OpenAI error ``type`` the server edge emits, so the edge maps errors by class,
never by message text. Lower-level errors (llama.cpp, httpx, sqlite3, psycopg, redis) are
translated into this tree in exactly one place per room with ``raise ... from exc``.

```
SovereignError                      500 server_error
├── ConfigError                     500 server_error        bad settings / TOML / env
│   └── MissingExtraError           500 (code missing_extra)  a feature's pip extra is not installed
├── InvalidRequestError             400 invalid_request_error
│   ├── ContextLengthExceededError  400 (code context_length_exceeded)
│   ├── UnsupportedParameterError   400 (code unsupported_parameter)
│   └── RequestTooLargeError        413 (code request_too_large)
├── AuthenticationError             401 authentication_error
├── PermissionDeniedError           403 permission_error
│   └── FeatureDisabledError        403 (code feature_disabled)  a feature flag is off for the caller
├── NotFoundError                   404 not_found_error
│   └── ModelNotFoundError          404 (code model_not_found)
├── ConflictError                   409 conflict_error
├── RateLimitError                  429 rate_limit_error
├── EngineError                     502 engine_error        an engine failed or answered garbage
│   ├── EngineUnavailableError      503 (code engine_unavailable)
│   ├── EngineOverloadedError       503 (code engine_overloaded)  queue full
│   ├── EngineTimeoutError          504 (code engine_timeout)
│   └── StreamInterruptedError      502 (code engine_stream_interrupted)  failed after the 1st token
└── StorageError                    500 storage_error       SQLite / PostgreSQL / Redis failed
```
"""

from __future__ import annotations

from typing import Any, ClassVar


class SovereignError(Exception):
    """Base of every Sovereign error.

    Args:
        message: what went wrong and how to fix it, written for the user.
        param: the request field at fault (OpenAI ``param``), if any.
        code: a stable machine-readable code (OpenAI ``code``); defaults to the class's ``code``.
    """

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Extra HTTP response headers for this error (``Retry-After`` on a 429)."""
        return {}

    def to_envelope(self) -> dict[str, Any]:
        """The OpenAI error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(SovereignError):
    """Settings, the TOML file or a ``SOVEREIGN_*`` variable is invalid or unknown."""

    code = "invalid_config"


class MissingExtraError(ConfigError):
    """A configured feature needs a pip extra that is not installed (``sovereign[extra]``).

    Args:
        extra: the extra's name, also in the message with the pip command.
    """

    code = "missing_extra"

    def __init__(self, message: str, *, extra: str = "", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.extra = extra


class InvalidRequestError(SovereignError):
    """The request is malformed or asks for something impossible (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    """Prompt tokens plus requested output tokens exceed the model's context window."""

    code = "context_length_exceeded"


class UnsupportedParameterError(InvalidRequestError):
    """A parameter the target engine cannot honour (e.g. ``n > 1``); never silently ignored."""

    code = "unsupported_parameter"


class RequestTooLargeError(InvalidRequestError):
    """The request body is larger than ``server.max_body_bytes`` (HTTP 413)."""

    status_code = 413
    code = "request_too_large"


class AuthenticationError(SovereignError):
    """Missing or wrong API key (HTTP 401)."""

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(SovereignError):
    """The caller is known but may not do this, e.g. a path outside the allowed root (HTTP 403)."""

    status_code = 403
    error_type = "permission_error"


class FeatureDisabledError(PermissionDeniedError):
    """A feature flag turned this off for the caller (HTTP 403, code ``feature_disabled``)."""

    code = "feature_disabled"


class NotFoundError(SovereignError):
    """A named thing (document, collection, conversation) does not exist (HTTP 404)."""

    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """No backend serves the requested model name."""

    code = "model_not_found"


class ConflictError(SovereignError):
    """The request conflicts with current state (HTTP 409)."""

    status_code = 409
    error_type = "conflict_error"


class RateLimitError(SovereignError):
    """Too many requests for the caller or the engine (HTTP 429); ``retry_after_s`` (whole seconds,
    or None) becomes the ``Retry-After`` header (RFC 9110 section 10.2.3)."""

    status_code = 429
    retry_after_s: int | None = None

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}
    error_type = "rate_limit_error"


class EngineError(SovereignError):
    """An inference or embedding engine failed (HTTP 502)."""

    status_code = 502
    error_type = "engine_error"
    code = "engine_error"


class EngineUnavailableError(EngineError):
    """The engine is not loaded, not reachable, or its circuit breaker is open (HTTP 503)."""

    status_code = 503
    code = "engine_unavailable"


class EngineOverloadedError(EngineError):
    """The engine's wait queue is full; retry later (HTTP 503)."""

    status_code = 503
    code = "engine_overloaded"


class EngineTimeoutError(EngineError):
    """The engine did not answer within the configured timeout (HTTP 504)."""

    status_code = 504
    code = "engine_timeout"


class StreamInterruptedError(EngineError):
    """An engine failed after its first token was streamed, so no invisible retry or fallback is
    possible; the server sends it as the SSE event ``data: {"error": {...}}`` then ``data: [DONE]``.
    ``deployment`` names the engine that failed."""

    code = "engine_stream_interrupted"

    def __init__(self, message: str, deployment: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.deployment = deployment


class StorageError(SovereignError):
    """A database or cache backend failed (HTTP 500)."""

    error_type = "storage_error"
    code = "storage_error"
