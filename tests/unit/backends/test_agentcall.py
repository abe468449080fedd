"""The one retry-and-map layer the Nomad and Consul adapters share."""

from __future__ import annotations

import ssl

import pytest

from yurt.backends.agentcall import status_error, transport_error, with_retries
from yurt.config import ConsulConfig, NomadConfig
from yurt.errors import (
    ClusterBadRequest,
    ClusterError,
    ClusterNotFound,
    ClusterUnauthorized,
    ClusterUnavailable,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, ClusterUnauthorized),
        (403, ClusterUnauthorized),
        (404, ClusterNotFound),
        (400, ClusterBadRequest),
        (500, ClusterUnavailable),
        (503, ClusterUnavailable),
        (429, ClusterUnavailable),
        (409, ClusterError),
        (None, ClusterError),
    ],
)
def test_an_answer_maps_by_its_status(status: int | None, kind: type[ClusterError]) -> None:
    """Each status becomes one kind of error, keeping the agent's text apart."""
    error = status_error("nomad", status, "nomad scale: HTTP ...", "its body")
    assert type(error) is kind
    assert (error.service, error.status, error.message) == ("nomad", status, "its body")


def test_a_refused_token_names_where_to_set_one() -> None:
    """401/403 says which setting holds each agent's token."""
    assert "NOMAD_TOKEN" in str(status_error("nomad", 403, "nomad register: HTTP 403"))
    assert "CONSUL_HTTP_TOKEN" in str(status_error("consul", 403, "consul kv: denied"))


def test_no_answer_is_transient_but_a_bad_certificate_is_not() -> None:
    """A refused connection may pass on a retry; an untrusted certificate never does."""
    refused = transport_error(
        "consul", "health", ConnectionRefusedError(111, "refused"), ConsulConfig, "", "refused"
    )
    assert isinstance(refused, ClusterUnavailable)
    assert "cannot reach Consul: refused; check ConsulConfig.addr" in str(refused)
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error = transport_error("nomad", "jobs", untrusted, NomadConfig, "https://n:4646", "x")
    assert type(error) is ClusterError and "TLS handshake failed" in str(error)


async def test_transient_failures_are_retried_up_to_the_bound() -> None:
    """``retries`` more tries after the first, then the last error; a success ends it early."""
    tries: list[int] = []

    async def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ClusterUnavailable("down", service="nomad")
        return "up"

    assert await with_retries("nomad", "scale", flaky, retries=2) == "up"
    tries.clear()

    async def down() -> str:
        tries.append(1)
        raise ClusterUnavailable("down", service="consul")

    with pytest.raises(ClusterUnavailable):
        await with_retries("consul", "register", down, retries=1)
    assert len(tries) == 2


async def test_a_lasting_failure_is_not_retried() -> None:
    """A refusal (not transient) is raised at once."""
    tries: list[int] = []

    async def refused() -> None:
        tries.append(1)
        raise ClusterUnauthorized("no", service="nomad")

    with pytest.raises(ClusterUnauthorized):
        await with_retries("nomad", "scale", refused, retries=4)
    assert len(tries) == 1
