"""The one error tree of yurt, grouped by who must act.

::

    YurtError
    ├── AppDefinitionError        fix your App class
    │   └── AppLoadError          the app file does not import (``file:line: Type: message``)
    ├── PayloadError              rebuild the payload or run a matching interpreter
    ├── ConfigError               fix the server or CLI configuration
    ├── DeployError               fix the cluster or the deploy
    │   ├── SchedulingError       no runner could be placed or started
    │   │   └── EnvironmentBuildError  the app's requirements did not install (fix them)
    │   └── ClusterError          Nomad or Consul failed a call (``service``, ``status``)
    │       ├── ClusterUnavailable    unreachable, timed out, 5xx or 429 after the retries
    │       ├── ClusterUnauthorized   the ACL token was refused (401/403)
    │       ├── ClusterNotFound       no such job, allocation or path (404)
    │       └── ClusterBadRequest     the server refused the request (400); carries its message
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


class AppLoadError(AppDefinitionError):
    """The app file failed to import: a syntax error, or an exception while its code ran.

    The message is one line, ``app.py:12: SyntaxError: invalid syntax``, naming the line of the
    user's code nearest the failure; the exception itself is the ``__cause__``.
    """


class PayloadError(YurtError):
    """A payload cannot be loaded: corrupt, tampered with, or built by another interpreter."""


class ConfigError(YurtError, ValueError):
    """A configuration value is invalid."""


class DeployError(YurtError):
    """The app could not be deployed or its runners managed."""


class SchedulingError(DeployError):
    """No runner could be placed or started for an app."""


class EnvironmentBuildError(SchedulingError):
    """The app's ``requirements`` did not build an environment; the message quotes the
    installer's last lines (or names both sides of a clash with yurt's own packages)."""


class ClusterError(DeployError):
    """A call to Nomad or Consul failed; ``service`` names which, ``status`` is its HTTP status.

    ``message`` is what the server said (its body), kept apart so callers can match on it.
    """

    def __init__(
        self, detail: str, *, service: str, status: int | None = None, message: str = ""
    ) -> None:
        super().__init__(detail)
        self.service = service
        self.status = status
        self.message = message


class ClusterUnavailable(ClusterError):
    """Nomad or Consul could not be reached, timed out, or kept failing (5xx, 429)."""


class ClusterUnauthorized(ClusterError):
    """Nomad or Consul refused the ACL token: set a token whose policy allows the call."""


class ClusterNotFound(ClusterError):
    """Nomad or Consul has no such job, allocation or path."""


class ClusterBadRequest(ClusterError):
    """Nomad or Consul refused the request as invalid; ``message`` is its explanation."""


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
