"""The pure parts of the Nomad backend, its client and Consul discovery."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
import pytest
import requests
from consul.exceptions import ACLPermissionDenied, BadRequest, ConsulException, Timeout
from nomad.api.exceptions import (
    BadRequestNomadException,
    BaseNomadException,
    URLNotAuthorizedNomadException,
    URLNotFoundNomadException,
)

from yurt.backends.base import RunnerState, StartFailure
from yurt.backends.nomad import backend as nb
from yurt.backends.nomad import client as nc
from yurt.config import NomadConfig
from yurt.discovery import consul as dc
from yurt.errors import (
    ClusterBadRequest,
    ClusterError,
    ClusterNotFound,
    ClusterUnauthorized,
    ClusterUnavailable,
    ConfigError,
)

AID = "0b5e6f1e-0000-4000-8000-00000000000{}"


def stub(n: int, client: str = "running", desired: str = "run", **extra: Any) -> dict[str, Any]:
    """An allocation stub as ``GET /v1/job/:id/allocations`` lists it."""
    base: dict[str, Any] = {
        "ID": AID.format(n),
        "Name": f"yurt-o-a.runner[{n}]",
        "TaskGroup": "runner",
        "ClientStatus": client,
        "DesiredStatus": desired,
        "CreateIndex": 100 + n,
        "CreateTime": 1_700_000_000_000_000_000,
        "AllocatedResources": {
            "Shared": {"Ports": [{"Label": "http", "Value": 20000 + n, "HostIP": "10.0.0.5"}]}
        },
    }
    base.update(extra)
    return base


def response(status: int, text: str = "") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = text.encode()
    r.reason = "X"
    return r


@pytest.mark.parametrize(
    ("name", "index"),
    [("yurt-o-a.runner[0]", 0), ("yurt-o-a.runner[12]", 12), ("weird", -1), ("", -1)],
)
def test_name_index(name: str, index: int) -> None:
    """The name index is the number in the trailing brackets (NOMAD_ALLOC_INDEX)."""
    assert nb.name_index(name) == index


def test_pick_stops_highest_index_first() -> None:
    """Nomad stops the highest name index first; terminal and stopping ones are skipped."""
    stubs = [
        stub(0),
        stub(3, client="pending"),
        stub(2),
        stub(5, client="failed"),
        stub(4, desired="stop"),
        stub(1),
    ]
    assert nb.stops_for(stubs, 2) == [AID.format(3), AID.format(2)]
    assert nb.stops_for(stubs, 10) == [AID.format(n) for n in (3, 2, 1, 0)]
    assert nb.stops_for(stubs, 0) == []


@pytest.mark.parametrize(
    ("client", "desired", "healthy", "state"),
    [
        ("pending", "run", False, RunnerState.PENDING),
        ("running", "run", False, RunnerState.SETUP),
        ("running", "run", True, RunnerState.IDLE),
        ("running", "stop", True, RunnerState.DRAINING),
        ("complete", "run", False, None),
        ("failed", "run", False, None),
        ("lost", "stop", False, None),
    ],
)
def test_view_of(client: str, desired: str, healthy: bool, state: RunnerState | None) -> None:
    """Allocation status and health map onto runner states; terminal ones have no view."""
    view = nb.view_of(
        "o/a", stub(1, client, desired), healthy=healthy, draining=False, now=0.0, mono=0.0
    )
    if state is None:
        assert view is None
    else:
        assert view is not None and view.state == state
        assert (view.host, view.port, view.runner_id) == ("10.0.0.5", 20001, AID.format(1))


def test_view_started_at_on_monotonic_clock() -> None:
    """started_at is the allocation's age moved onto the monotonic clock."""
    created = 1_700_000_000.0
    view = nb.view_of(
        "o/a",
        stub(1, CreateTime=int(created * 1e9)),
        healthy=True,
        draining=True,
        now=created + 30,
        mono=1000.0,
    )
    assert view is not None and view.state == RunnerState.DRAINING
    assert view.started_at == pytest.approx(970.0)


def test_address_unknown_without_ports() -> None:
    """An allocation without allocated ports has no address yet."""
    assert nb.alloc_address({"ID": "x"}) == ("", 0)


def test_read_failure_takes_last_mark() -> None:
    """The runner's last failure line says why it ended."""
    text = "x\nyurt-runner-failure: setup: old\nyurt-runner-failure: payload: bad token\n"
    assert nb.read_failure(text) == ("payload", "bad token")
    assert nb.read_failure("Segmentation fault\n") is None


def test_health_killed_and_exit_detail() -> None:
    """Task events tell a check_restart kill and how the task ended."""
    events = [
        {"Type": "Restart Signaled", "RestartReason": "healthcheck: check unhealthy"},
        {"Type": "Terminated", "ExitCode": 5, "DisplayMessage": "Exit Code: 5"},
    ]
    s = stub(1, "failed", TaskStates={"runner": {"Events": events, "Restarts": 2}})
    assert nb.health_killed(s)
    assert nb.exit_detail(s) == "Terminated: Exit Code: 5"
    assert not nb.health_killed(stub(2))


def test_job_digest_ignores_counts() -> None:
    """The digest changes with the body but not with the Count."""
    job = {"ID": "j", "Meta": {"a": "1"}, "TaskGroups": [{"Name": "runner", "Count": 1}]}
    other = {"ID": "j", "Meta": {"a": "1"}, "TaskGroups": [{"Name": "runner", "Count": 7}]}
    changed = {"ID": "j", "Meta": {"a": "2"}, "TaskGroups": [{"Name": "runner", "Count": 1}]}
    assert nb.job_digest(job) == nb.job_digest(other) != nb.job_digest(changed)
    assert job["TaskGroups"][0]["Count"] == 1  # not mutated


@pytest.mark.parametrize(
    ("addr", "parsed"),
    [
        ("http://127.0.0.1:4646", ("127.0.0.1", 4646, False)),
        ("https://nomad.example", ("nomad.example", 4646, True)),
        ("nomad:5000", ("nomad", 5000, False)),
        ("https://[::1]:4647/", ("::1", 4647, True)),
    ],
)
def test_nomad_addr(addr: str, parsed: tuple[str, int, bool]) -> None:
    """Nomad's address splits into host, port and TLS."""
    assert nc.parse_addr(addr) == parsed


@pytest.mark.parametrize("addr", ["ftp://x:1", "http://:80", "http://h:notaport"])
def test_bad_addr(addr: str) -> None:
    """An address that is no http(s) URL is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="addr"):
        nc.parse_addr(addr)
    with pytest.raises(ConfigError, match="addr"):
        dc.parse_addr(addr)


def test_consul_addr() -> None:
    """Consul's address defaults to port 8500 and keeps its scheme."""
    assert dc.parse_addr("https://consul") == ("consul", 8500, "https")


def test_wait_param() -> None:
    """A blocking wait is a Go duration string in whole seconds, at least 1s."""
    assert nc.wait_param(60.0) == "60s"
    assert nc.wait_param(0.2) == "1s"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (URLNotAuthorizedNomadException(response(403, "Permission denied")), ClusterUnauthorized),
        (BaseNomadException(response(401, "ACL token not found")), ClusterUnauthorized),
        (URLNotFoundNomadException(response(404, "job not found")), ClusterNotFound),
        (BadRequestNomadException(response(400, "bad")), ClusterBadRequest),
        (BaseNomadException(response(500, "rpc error")), ClusterUnavailable),
        (BaseNomadException(response(429, "slow down")), ClusterUnavailable),
        (BaseNomadException(response(409, "conflict")), ClusterError),
        (BaseNomadException(requests.ConnectionError("refused")), ClusterUnavailable),
        (BaseNomadException(requests.ReadTimeout("slow")), ClusterUnavailable),
        (ValueError("odd"), ClusterError),
    ],
)
def test_nomad_error_mapping(exc: BaseException, kind: type[ClusterError]) -> None:
    """python-nomad's exceptions become the yurt error that says who must act."""
    mapped = nc.map_error(exc, "scale")
    assert type(mapped) is kind
    assert mapped.service == "nomad"
    assert "nomad scale" in str(mapped)


def test_nomad_bad_request_keeps_message() -> None:
    """A 400 keeps Nomad's own message, so callers can match on it."""
    exc = BadRequestNomadException(response(400, "job scaling blocked due to active deployment"))
    mapped = nc.map_error(exc, "scale")
    assert mapped.message == "job scaling blocked due to active deployment"
    assert mapped.status == 400


def test_unauthorized_names_the_fix() -> None:
    """A refused token says which setting to change."""
    mapped = nc.map_error(URLNotAuthorizedNomadException(response(403, "denied")), "register")
    assert "NomadConfig.token" in str(mapped)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ACLPermissionDenied("ACL not found"), ClusterUnauthorized),
        (BadRequest("400 bad check"), ClusterBadRequest),
        (Timeout(), ClusterUnavailable),
        (aiohttp.ClientConnectionError("refused"), ClusterUnavailable),
        (ConnectionRefusedError(111, "refused"), ClusterUnavailable),
        (ConsulException("500 leader lost"), ClusterUnavailable),
        (ConsulException("Failed to decode JSON"), ClusterError),
    ],
)
def test_consul_error_mapping(exc: BaseException, kind: type[ClusterError]) -> None:
    """py-consul and aiohttp errors become yurt errors at the one adapter."""
    mapped = dc.map_error(exc, "health.service")
    assert type(mapped) is kind
    assert mapped.service == "consul"


def test_endpoints_from_health_entries() -> None:
    """Service address falls back to the node's; Nomad's service id gives the runner id."""
    alloc = AID.format(1)
    entries = [
        {
            "Node": {"Address": "10.0.0.9"},
            "Service": {"ID": f"_nomad-task-{alloc}-group-runner-yurt-o-a-http", "Port": 2000},
        },
        {
            "Node": {"Address": "10.0.0.9"},
            "Service": {"ID": "other", "Address": "10.0.0.7", "Port": 2001},
        },
        {"Node": {"Address": "10.0.0.9"}, "Service": {"ID": "noport", "Port": 0}},
    ]
    found = dc.endpoints_from(entries)
    assert set(found) == {alloc, "other"}
    assert (found[alloc].host, found[alloc].port) == ("10.0.0.9", 2000)
    assert found["other"].host == "10.0.0.7"


def test_consul_durations_are_strings() -> None:
    """Consul's agent API takes Go duration strings."""
    assert dc.duration(10.0) == "10s"
    assert dc.duration(1.5) == "1.5s"


class ScriptedClient:
    """Answers allocation queries from a script and records the indexes asked for."""

    def __init__(self, replies: list[tuple[int, list[dict[str, Any]]]]) -> None:
        self.replies = replies
        self.asked: list[int] = []
        self.done = asyncio.Event()

    async def allocations(self, job_id: str, *, index: int = 0) -> tuple[int, list[Any]]:
        self.asked.append(index)
        if not self.replies:
            self.done.set()
            await asyncio.Event().wait()
        return self.replies.pop(0)

    async def task_log_tail(self, alloc_id: str, task: str, kind: str = "stderr") -> str:
        return "yurt-runner-failure: setup: boom\n"

    async def allocation(self, alloc_id: str) -> dict[str, Any]:
        return stub(int(alloc_id[-1]))


def scripted_backend(client: ScriptedClient) -> nb.NomadBackend:
    config = NomadConfig(addr="http://127.0.0.1:1", python=sys.executable)
    links = lambda app_id, header: None  # noqa: E731 - never called here
    return nb.NomadBackend(config, links, client=client)  # type: ignore[arg-type]


async def follow(backend: nb.NomadBackend, client: ScriptedClient) -> nb._App:
    app = nb._App("o/a", "yurt-o-a", target=1)
    backend._apps["o/a"] = app
    task = asyncio.create_task(backend._follow(app))
    await asyncio.wait_for(client.done.wait(), 10)
    task.cancel()
    await asyncio.gather(task, *backend._chores, return_exceptions=True)
    return app


async def test_watch_resets_index_when_it_goes_backwards() -> None:
    """A reply with a smaller index makes the next query start again from 0."""
    client = ScriptedClient([(10, []), (12, []), (5, []), (7, [])])
    await follow(scripted_backend(client), client)
    assert client.asked == [0, 10, 12, 0, 7]


async def test_failures_reported_once_per_restart_and_end() -> None:
    """Each restart and the end of a never-healthy allocation is one StartFailure, once."""
    crashed = {"runner": {"Restarts": 1, "Events": []}}
    ended = {"runner": {"Restarts": 2, "Events": []}}
    client = ScriptedClient(
        [
            (10, [stub(1, "pending")]),
            (11, [stub(1, TaskStates=crashed)]),
            (12, [stub(1, TaskStates=crashed)]),  # a wake-up without news
            (13, [stub(1, "failed", TaskStates=ended)]),
        ]
    )
    backend = scripted_backend(client)
    failures: list[StartFailure] = []
    backend.add_failure_listener(failures.append)
    await follow(backend, client)
    assert len(failures) == 3
    assert {f.error_type for f in failures} == {"runner_scheduling_failure"}
    assert all("boom" in f.detail for f in failures)
    views = backend.runners("o/a")
    assert [v.state for v in views] == [RunnerState.CRASH_BACKOFF]


async def test_failures_before_first_look_are_history() -> None:
    """Allocations that failed before the backend looked are not reported again."""
    ended = {"runner": {"Restarts": 2, "Events": []}}
    client = ScriptedClient([(10, [stub(1, "failed", TaskStates=ended)]), (11, [])])
    backend = scripted_backend(client)
    failures: list[StartFailure] = []
    backend.add_failure_listener(failures.append)
    await follow(backend, client)
    assert failures == []


async def test_stopped_allocation_is_no_failure() -> None:
    """An allocation we stopped that ends is not a start failure."""
    client = ScriptedClient(
        [(10, [stub(1, "running")]), (11, [stub(1, "complete", desired="stop")])]
    )
    backend = scripted_backend(client)
    failures: list[StartFailure] = []
    backend.add_failure_listener(failures.append)
    await follow(backend, client)
    assert failures == []
