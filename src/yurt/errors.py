"""The one error tree of yurt, grouped by who must act.

::

    YurtError
    ├── AppDefinitionError        fix your App class
    ├── PayloadError              rebuild the payload or run a matching interpreter
    ├── ConfigError               fix the server or CLI configuration
    ├── DeployError               fix the cluster or the deploy
    │   └── SchedulingError       no runner could be placed or started
    └── RequestError              the caller (carries an HTTP status and an error type)

``AppException`` is not an error of yurt's own: an endpoint raises it to answer with a status of
its choosing (the name fal uses).
"""

from __future__ import annotations

from collections.abc import Mapping


class YurtError(Exception):
    """Base of every error yurt raises on purpose."""


class AppDefinitionError(YurtError, TypeError):
    """The App class is invalid; the message names the attribute and the fix."""


class PayloadError(YurtError):
    """A payload cannot be loaded: corrupt, tampered with, or built by another interpreter."""


class ConfigError(YurtError, ValueError):
    """A configuration value is invalid."""


class DeployError(YurtError):
    """The app could not be deployed or its runners managed."""


class SchedulingError(DeployError):
    """No runner could be placed or started for an app."""


class RequestError(YurtError):
    """A request failed; ``status`` and ``error_type`` are what the HTTP caller sees."""

    def __init__(self, detail: str, *, status: int, error_type: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error_type = error_type


class AppException(Exception):
    """Raised by an endpoint to answer with ``status_code`` and ``{"detail": message}``.

    ``headers`` go out with the reply, e.g. ``{"X-Fal-Needs-Retry": "1"}`` to ask the router to
    retry the request elsewhere, or ``"0"`` to forbid it.
    """

    def __init__(
        self, message: str, status_code: int = 500, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.headers: dict[str, str] = dict(headers or {})
