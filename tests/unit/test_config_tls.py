"""TLS settings of [nomad] and [consul]: read from the agents' own variables and the file,
checked when read, loaded into one SSLContext."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from yurt.config import (
    CONFIG_ENV,
    ConsulConfig,
    NomadConfig,
    build_server_config,
    go_bool,
    tls_failure,
)
from yurt.errors import ConfigError

TLS_VARS = {
    "NOMAD_CACERT", "NOMAD_CAPATH", "NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY",
    "NOMAD_TLS_SERVER_NAME", "NOMAD_SKIP_VERIFY", "CONSUL_CACERT", "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME", "CONSUL_HTTP_SSL_VERIFY",
}  # fmt: skip


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    """A CA file, a client certificate and its key, and a directory of CAs."""
    ca = trustme.CA()
    leaf = ca.issue_cert("client.test")
    out = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
        "dir": tmp_path / "cas",
    }
    ca.cert_pem.write_to_path(str(out["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(out["cert"]))
    leaf.private_key_pem.write_to_path(str(out["key"]))
    out["dir"].mkdir()
    return out


def config(environ: dict[str, str], file: dict[str, Any] | None = None) -> Any:
    return build_server_config(file or {}, {}, {"YURT_DATA_DIR": "/tmp/x", **environ})


def test_tls_variables_configure_yurt_only() -> None:
    """Every TLS variable of both agents is yurt's own configuration: no runner gets one."""
    assert TLS_VARS <= CONFIG_ENV


def test_nomad_variables(pem: dict[str, Path]) -> None:
    """NOMAD_CACERT, _CAPATH, _CLIENT_CERT, _CLIENT_KEY, _TLS_SERVER_NAME, _SKIP_VERIFY."""
    c = config(
        {
            "NOMAD_CACERT": str(pem["ca"]),
            "NOMAD_CAPATH": str(pem["dir"]),
            "NOMAD_CLIENT_CERT": str(pem["cert"]),
            "NOMAD_CLIENT_KEY": str(pem["key"]),
            "NOMAD_TLS_SERVER_NAME": "server.global.nomad",
            "NOMAD_SKIP_VERIFY": "true",
        }
    ).nomad
    assert (c.ca_cert, c.ca_path, c.client_cert, c.client_key) == (
        pem["ca"], pem["dir"], pem["cert"], pem["key"]
    )  # fmt: skip
    assert c.tls_server_name == "server.global.nomad"
    assert c.verify_tls is False
    assert config({"NOMAD_SKIP_VERIFY": "0"}).nomad.verify_tls is True


def test_consul_variables(pem: dict[str, Path]) -> None:
    """CONSUL_CACERT, _CAPATH, _CLIENT_CERT, _CLIENT_KEY, _TLS_SERVER_NAME, _HTTP_SSL_VERIFY."""
    c = config(
        {
            "CONSUL_CACERT": str(pem["ca"]),
            "CONSUL_CAPATH": str(pem["dir"]),
            "CONSUL_CLIENT_CERT": str(pem["cert"]),
            "CONSUL_CLIENT_KEY": str(pem["key"]),
            "CONSUL_TLS_SERVER_NAME": "consul.service.consul",
            "CONSUL_HTTP_SSL_VERIFY": "false",
        }
    ).consul
    assert (c.ca_cert, c.ca_path, c.client_cert, c.client_key) == (
        pem["ca"], pem["dir"], pem["cert"], pem["key"]
    )  # fmt: skip
    assert c.tls_server_name == "consul.service.consul"
    assert c.verify_tls is False
    assert config({"CONSUL_HTTP_SSL_VERIFY": "1"}).consul.verify_tls is True


def test_file_sections_and_variables_over_them(pem: dict[str, Path]) -> None:
    """[nomad] and [consul] take the same settings; a variable overrides the file."""
    file = {
        "nomad": {"ca_cert": str(pem["ca"]), "client_cert": str(pem["cert"]),
                  "client_key": str(pem["key"]), "tls_server_name": "from-file"},
        "consul": {"ca_path": str(pem["dir"]), "verify_tls": False},
    }  # fmt: skip
    c = config({"NOMAD_TLS_SERVER_NAME": "from-env"}, file)
    assert c.nomad.client_pair() == (str(pem["cert"]), str(pem["key"]))
    assert c.nomad.tls_server_name == "from-env"
    assert c.consul.ca_path == pem["dir"] and c.consul.verify_tls is False


@pytest.mark.parametrize(
    ("var", "value", "verify"),
    [("NOMAD_SKIP_VERIFY", "T", False), ("NOMAD_SKIP_VERIFY", "FALSE", True),
     ("CONSUL_HTTP_SSL_VERIFY", "F", False), ("CONSUL_HTTP_SSL_VERIFY", "True", True)],
)  # fmt: skip
def test_booleans_as_go_reads_them(var: str, value: str, verify: bool) -> None:
    """The boolean variables take what Go's strconv.ParseBool takes."""
    c = config({var: value})
    assert (c.nomad if var.startswith("NOMAD") else c.consul).verify_tls is verify


@pytest.mark.parametrize("var", ["NOMAD_SKIP_VERIFY", "CONSUL_HTTP_SSL_VERIFY"])
def test_a_boolean_that_is_not_one_is_refused(var: str) -> None:
    """'yes' is no boolean to Go: refused by name rather than guessed (Consul reads it as false)."""
    with pytest.raises(ConfigError, match=rf"^{var}='yes' is not a boolean"):
        config({var: "yes"})
    with pytest.raises(ConfigError):
        go_bool(var, "on")


@pytest.mark.parametrize(
    ("section", "field", "var"),
    [("nomad", "ca_cert", "NOMAD_CACERT"), ("nomad", "client_key", "NOMAD_CLIENT_KEY"),
     ("consul", "client_cert", "CONSUL_CLIENT_CERT"), ("consul", "ca_cert", "CONSUL_CACERT")],
)  # fmt: skip
def test_a_missing_file_names_the_setting(
    tmp_path: Path, pem: dict[str, Path], section: str, field: str, var: str
) -> None:
    """A file that is not there is a ConfigError naming the field and its variable."""
    tls = {"client_cert": str(pem["cert"]), "client_key": str(pem["key"])}
    tls[field] = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError) as caught:
        config({}, {section: tls})
    message = str(caught.value)
    assert f"{section}.{field}" in message and f"({var})" in message
    assert "missing.pem is not a file" in message


def test_a_ca_path_must_be_a_directory(pem: dict[str, Path]) -> None:
    """ca_path names a directory of CAs; a file there is refused, naming CONSUL_CAPATH."""
    with pytest.raises(ConfigError, match=r"consul\.ca_path.*\(CONSUL_CAPATH\).*not a directory"):
        config({"CONSUL_CAPATH": str(pem["ca"])})


@pytest.mark.parametrize("given", ["cert", "key"])
def test_client_certificate_and_key_go_together(pem: dict[str, Path], given: str) -> None:
    """A client certificate without its key (or the reverse) is refused, naming both settings."""
    var = {"cert": "NOMAD_CLIENT_CERT", "key": "NOMAD_CLIENT_KEY"}[given]
    with pytest.raises(ConfigError) as caught:
        config({var: str(pem[given])})
    message = str(caught.value)
    assert "client_cert (NOMAD_CLIENT_CERT)" in message
    assert "client_key (NOMAD_CLIENT_KEY)" in message
    assert "give both or neither" in message


def test_ssl_context_trusts_the_ca_and_presents_the_certificate(pem: dict[str, Path]) -> None:
    """ssl_context loads the CA (instead of the system's) and the client certificate."""
    c = ConsulConfig(ca_cert=pem["ca"], client_cert=pem["cert"], client_key=pem["key"])
    ctx = c.ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1
    assert c.requests_verify() == str(pem["ca"])
    off = NomadConfig(verify_tls=False).ssl_context()
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname
    assert NomadConfig(verify_tls=False, ca_cert=pem["ca"]).requests_verify() is False
    assert NomadConfig(ca_path=pem["dir"]).requests_verify() == str(pem["dir"])


def test_a_file_that_is_not_pem_is_a_config_error(pem: dict[str, Path], tmp_path: Path) -> None:
    """A CA or key file that does not load is a ConfigError naming the setting, when built."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"ca_cert \(NOMAD_CACERT\): cannot load"):
        NomadConfig(ca_cert=junk).ssl_context()
    with pytest.raises(ConfigError, match=r"client_key \(CONSUL_CLIENT_KEY\): cannot load"):
        ConsulConfig(client_cert=pem["cert"], client_key=junk).ssl_context()


def test_handshake_advice() -> None:
    """An untrusted certificate asks for the CA; a cut connection says nothing definite."""
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert "ca_cert (CONSUL_CACERT)" in str(ConsulConfig.handshake_advice(verify))
    assert NomadConfig.handshake_advice(ssl.SSLEOFError(8, "EOF")) is None
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert")
    assert "client_cert (NOMAD_CLIENT_CERT)" in str(NomadConfig.handshake_advice(alert))
    assert NomadConfig.disconnect_hint("http://127.0.0.1:4646") == ""
    assert "NOMAD_CLIENT_KEY" in NomadConfig.disconnect_hint("https://127.0.0.1:4646")


def test_tls_failure_finds_the_nested_error() -> None:
    """The SSLError behind a client library's wrappers is found through causes and args."""
    inner = ssl.SSLError(1, "alert")
    try:
        try:
            raise inner
        except ssl.SSLError as exc:
            raise ConnectionError(OSError("wrapped", exc)) from exc
    except ConnectionError as outer:
        assert tls_failure(outer) is inner
    assert tls_failure(ValueError("no")) is None
