"""TLS towards the Nomad and Consul agents, shared by their configurations."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from yurt.config.base import Frozen
from yurt.errors import ConfigError

# The TLS settings of a Nomad or Consul client, by field, with the variable of their own CLIs
# that sets each (hashicorp/nomad api/api.go and hashicorp/consul api/api.go, DefaultConfig).
TLS_ENV: dict[str, dict[str, str]] = {
    "NOMAD": {
        "ca_cert": "NOMAD_CACERT",
        "ca_path": "NOMAD_CAPATH",
        "client_cert": "NOMAD_CLIENT_CERT",
        "client_key": "NOMAD_CLIENT_KEY",
        "tls_server_name": "NOMAD_TLS_SERVER_NAME",
        "verify_tls": "NOMAD_SKIP_VERIFY",
    },
    "CONSUL": {
        "ca_cert": "CONSUL_CACERT",
        "ca_path": "CONSUL_CAPATH",
        "client_cert": "CONSUL_CLIENT_CERT",
        "client_key": "CONSUL_CLIENT_KEY",
        "tls_server_name": "CONSUL_TLS_SERVER_NAME",
        "verify_tls": "CONSUL_HTTP_SSL_VERIFY",
    },
}


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind a client library's exception, if any.

    requests nests it in args and ``reason``; aiohttp in ``os_error`` or as the cause.
    """
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        # aiohttp's ClientConnectorCertificateError is itself an SSLCertVerificationError,
        # without its details: take the one it wraps.
        if isinstance(cert := getattr(e, "certificate_error", None), ssl.SSLError):
            return cert
        if isinstance(e, ssl.SSLError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        stack.append(getattr(e, "os_error", None))
    return None


class ClusterTLS(Frozen):
    """TLS towards a Nomad or Consul agent over https: whom to trust, and who we are.

    The fields mean what the agents' own CLIs make of their variables (``api/api.go``,
    ``DefaultConfig``, in hashicorp/nomad and hashicorp/consul): ``ca_cert`` wins over
    ``ca_path`` (go-rootcerts), ``tls_server_name`` is the name sent (SNI) and checked in the
    agent's certificate instead of the address's host, and ``verify_tls = false`` checks
    nothing. Files are checked when the configuration is read; they are loaded when a client
    is built (``ssl_context``, ``requests_verify``).
    """

    _ENV: ClassVar[str] = ""

    verify_tls: bool = Field(
        default=True, description="check the agent's certificate (false: insecure, tests only)"
    )
    ca_cert: Path | None = Field(
        default=None, description="PEM file of the CAs that sign the agent's certificate"
    )
    ca_path: Path | None = Field(
        default=None, description="directory of PEM CA files (c_rehash'ed); ca_cert wins"
    )
    client_cert: Path | None = Field(
        default=None, description="PEM client certificate, for agents that verify clients"
    )
    client_key: Path | None = Field(default=None, description="PEM private key of client_cert")
    tls_server_name: str | None = Field(
        default=None, description="the name in the agent's certificate, when not the addr's host"
    )

    @classmethod
    def _setting(cls, field: str) -> str:
        """``client_cert (NOMAD_CLIENT_CERT)``: a field as a user sets it."""
        var = TLS_ENV.get(cls._ENV, {}).get(field)
        return f"{field} ({var})" if var else field

    @field_validator("ca_cert", "client_cert", "client_key")
    @classmethod
    def _a_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not value.is_file():
            name = cls._setting(str(info.field_name))
            raise ValueError(f"{name}: {value} is not a file; give the path of a PEM file")
        return value

    @field_validator("ca_path")
    @classmethod
    def _a_directory(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            name = cls._setting("ca_path")
            raise ValueError(f"{name}: {value} is not a directory of PEM CA files")
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> ClusterTLS:
        if (self.client_cert is None) != (self.client_key is None):
            given, missing = ("client_cert", "client_key")
            if self.client_cert is None:
                given, missing = missing, given
            raise ValueError(
                f"{self._setting(given)} is set but {self._setting(missing)} is not: a client "
                "certificate and its key go together, give both or neither"
            )
        return self

    def client_pair(self) -> tuple[str, str] | None:
        """(certificate, key) paths, or None without a client certificate."""
        if self.client_cert is None or self.client_key is None:
            return None
        return str(self.client_cert), str(self.client_key)

    def requests_verify(self) -> bool | str:
        """``verify`` as requests takes it: False, a CA file or directory, or True."""
        if not self.verify_tls:
            return False
        ca = self.ca_cert or self.ca_path
        return str(ca) if ca is not None else True

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSLContext with these settings; a file that does not load is a ConfigError.

        The default context trusts the system's CAs unless ``ca_cert`` or ``ca_path`` names
        others (as Go's tls client does with a RootCAs pool).
        """
        if not self.verify_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            # With a CA file or directory, only those CAs are trusted (the system's are not).
            field = "ca_cert" if self.ca_cert is not None else "ca_path"
            try:
                ctx = ssl.create_default_context(
                    cafile=None if self.ca_cert is None else str(self.ca_cert),
                    capath=None
                    if self.ca_cert is not None or self.ca_path is None
                    else str(self.ca_path),
                )
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"{self._setting(field)}: cannot load {self.ca_cert or self.ca_path}: "
                    f"{exc}; give PEM CA certificates"
                ) from exc
        if (pair := self.client_pair()) is not None:
            try:
                ctx.load_cert_chain(*pair)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"{self._setting('client_cert')} and {self._setting('client_key')}: cannot "
                    f"load {pair[0]} with {pair[1]}: {exc}; give a PEM certificate and its key"
                ) from exc
        return ctx

    @classmethod
    def handshake_advice(cls, failure: ssl.SSLError) -> str | None:
        """What to set when a TLS handshake with the agent failed with ``failure``; None when
        the failure says nothing about the settings (the connection was cut: EOF, reset)."""
        if isinstance(failure, ssl.SSLCertVerificationError):
            return (
                f"the agent's certificate is not trusted "
                f"({getattr(failure, 'verify_message', None) or failure}); set "
                f"{cls._setting('ca_cert')} to the CA that signed it, or "
                f"{cls._setting('tls_server_name')} to the name it carries"
            )
        if isinstance(failure, ssl.SSLEOFError | ssl.SSLSyscallError | ssl.SSLZeroReturnError):
            return None
        reason = getattr(failure, "reason", None) or str(failure)
        # An alert from the agent (TLSV13_ALERT_CERTIFICATE_REQUIRED, ..._BAD_CERTIFICATE,
        # ..._UNKNOWN_CA) is how a Go agent with verify_https_client refuses a client.
        return (
            f"{reason}; if the agent verifies clients, set {cls._setting('client_cert')} and "
            f"{cls._setting('client_key')} to a certificate signed by a CA it trusts; if it "
            "does not speak https at that address, use http://"
        )

    @classmethod
    def disconnect_hint(cls, addr: str) -> str:
        """A hint for a connection to ``addr`` that was cut: over https it may be the agent
        refusing our client certificate (an agent that sends no alert just closes)."""
        if not addr.lower().startswith("https://"):
            return ""
        return (
            f"; if the agent verifies clients (verify_https_client), check "
            f"{cls._setting('client_cert')} and {cls._setting('client_key')}: a missing or "
            "unknown client certificate also ends the connection"
        )

    def describe(self) -> str:
        """The settings in use, for a report (paths, never contents)."""
        if not self.verify_tls:
            parts = ["certificate NOT verified"]
        elif self.ca_cert is not None or self.ca_path is not None:
            parts = [f"CA {self.ca_cert or self.ca_path}"]
        else:
            parts = ["system CAs"]
        if self.client_cert is not None:
            parts.append(f"client certificate {self.client_cert}")
        if self.tls_server_name:
            parts.append(f"server name {self.tls_server_name}")
        return ", ".join(parts)
