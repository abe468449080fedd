"""The pure parts of the Nomad backend, its client and Consul discovery."""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from consul.exceptions import ACLPermissionDenied, BadRequest, ConsulException, Timeout
from nomad.api.exceptions import (
    BadRequestNomadException,
    BaseNomadException,
    URLNotAuthorizedNomadException,
    URLNotFoundNomadException,
)
from pydantic import BaseModel
from structlog.testing import capture_logs

import yurt
from yurt.backends.base import RunnerState, StartFailure
from yurt.backends.nomad import allocs, scaling
from yurt.backends.nomad import backend as nb
from yurt.backends.nomad import client as nc
from yurt.backends.nomad.naming import PayloadRef, parse_failure
from yurt.config import ConsulConfig, NomadConfig, SchedulerConfig
from yurt.config.base import CONSUL_PORT, NOMAD_PORT, parse_addr
from yurt.discovery import consul as dc
from yurt.errors import (
    ClusterBadRequest,
    ClusterError,
    ClusterNotFound,
    ClusterUnauthorized,
    ClusterUnavailable,
    ConfigError,
)
from yurt.scheduler.loop import Scheduler
from yurt.scheduler.policy import AppLoad, Decision, RunnerLoad
from yurt.spec import build_spec

from support import DEADLINE

AID = "0b5e6f1e-0000-4000-8000-00000000000{}"


class Ping(BaseModel):
    text: str = ""


class Four(yurt.App, keep_alive=10, max_concurrency=4):
    """An app with room for four runners."""

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return body


SPEC = build_spec(Four)


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
    assert allocs.name_index(name) == index


def ids(*ns: int) -> list[str]:
    return [AID.format(n) for n in ns]


def test_stop_order_highest_index_first() -> None:
    """Nomad stops the highest name index it counts first: a failed allocation waiting to be
    rescheduled too; stopping, replaced, complete and lost ones are skipped."""
    stubs = [
        stub(0),
        stub(3, client="pending"),
        stub(2),
        stub(5, client="failed"),
        stub(4, desired="stop"),
        stub(6, client="failed", NextAllocation="0b5e6f1e-0000-4000-8000-0000000000a6"),
        stub(7, client="complete"),
        stub(8, client="lost"),
        stub(9, client="failed", desired="stop"),
        stub(1),
    ]
    assert allocs.stop_order(stubs) == ids(5, 3, 2, 1, 0)
    assert [allocs.counted(s) for s in stubs] == [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]


def nomad_stops(stubs: list[dict[str, Any]], count: int) -> list[str]:
    """What Nomad's reconciler stops at ``count`` (filterByRescheduleable, computeStop).

    The allocations it counts: pending or running with DesiredStatus run, and failed ones
    with DesiredStatus run and no NextAllocation (their reschedule is delayed: ReschedulePolicy
    waits 30 s at first). The highest name indexes beyond the Count go.
    """
    held = [
        s
        for s in stubs
        if s["DesiredStatus"] == "run"
        and s["ClientStatus"] in ("pending", "running", "failed")
        and not s.get("NextAllocation")
    ]
    held.sort(key=lambda s: allocs.name_index(s["Name"]), reverse=True)
    return [s["ID"] for s in held[: max(0, len(held) - count)]]


@pytest.mark.parametrize(
    ("candidates", "leaving", "stops"),
    [
        ((3, 2, 1, 0), (), (3, 2, 1, 0)),
        ((3, 2, 0), (), (3, 2)),  # 1 is busy: lowering past it would stop it
        ((2, 1, 0), (), ()),  # the highest is busy: no lowering at all
        ((0,), (), ()),
        ((), (), ()),
        ((2, 0), (3,), (2,)),  # 3 is already leaving by a lower Count: step over it
    ],
)
def test_stops_for_takes_candidates_down_to_the_first_busy(
    candidates: tuple[int, ...], leaving: tuple[int, ...], stops: tuple[int, ...]
) -> None:
    """From the highest index down, each candidate is taken until the first runner that is not."""
    stubs = [stub(n) for n in range(4)]
    assert allocs.stops_for(stubs, set(ids(*candidates)), leaving=set(ids(*leaving))) == ids(*stops)


def test_stops_for_takes_a_failed_allocation_as_a_free_stop() -> None:
    """A failed allocation Nomad still counts goes first when it is the highest; busy blocks."""
    stubs = [stub(0), stub(1), stub(2), stub(3, "failed")]
    assert allocs.stops_for(stubs, set(ids(2))) == ids(3, 2)
    assert allocs.stops_for(stubs, set()) == ids(3)
    stubs = [stub(0, "failed"), stub(1), stub(2)]
    assert allocs.stops_for(stubs, set(ids(0, 1))) == []  # 2 is busy: the Count stays


@pytest.mark.parametrize(
    ("client", "desired", "healthy", "state"),
    [
        ("pending", "run", False, RunnerState.PENDING),
        ("running", "run", False, RunnerState.SETUP),
        ("running", "run", True, RunnerState.IDLE),
        ("running", "stop", True, RunnerState.DRAINING),
        ("complete", "run", False, None),
        ("failed", "run", False, RunnerState.PENDING),  # Nomad counts it until rescheduled
        ("failed", "stop", False, None),
        ("lost", "stop", False, None),
    ],
)
def test_view_of(client: str, desired: str, healthy: bool, state: RunnerState | None) -> None:
    """Allocation status and health map onto runner states; terminal ones have no view."""
    view = allocs.view_of(
        "o/a", stub(1, client, desired), healthy=healthy, draining=False, now=0.0, mono=0.0
    )
    if state is None:
        assert view is None
    else:
        assert view is not None and view.state == state
        assert (view.host, view.port, view.runner_id) == ("10.0.0.5", 20001, AID.format(1))
        assert (view.detail == allocs.RESCHEDULING) == (client == "failed")


def test_view_of_a_rescheduled_failure() -> None:
    """A failed allocation Nomad has replaced is history; one a lower Count takes drains."""
    replaced = stub(1, "failed", NextAllocation=AID.format(2))
    assert allocs.view_of("o/a", replaced, healthy=False, draining=False, now=0, mono=0) is None
    taken = allocs.view_of("o/a", stub(1, "failed"), healthy=False, draining=True, now=0, mono=0)
    assert taken is not None and taken.state == RunnerState.DRAINING


def test_view_started_at_on_monotonic_clock() -> None:
    """started_at is the allocation's age moved onto the monotonic clock."""
    created = 1_700_000_000.0
    view = allocs.view_of(
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
    assert allocs.alloc_address({"ID": "x"}) == ("", 0)


def test_read_failure_takes_last_mark() -> None:
    """The runner's last failure line says why it ended."""
    text = "x\nyurt-runner-failure: setup: old\nyurt-runner-failure: payload: bad token\n"
    assert parse_failure(text) == ("payload", "bad token")
    assert parse_failure("Segmentation fault\n") is None


def test_health_killed_and_exit_detail() -> None:
    """Task events tell a check_restart kill and how the task ended."""
    events = [
        {"Type": "Restart Signaled", "RestartReason": "healthcheck: check unhealthy"},
        {"Type": "Terminated", "ExitCode": 5, "DisplayMessage": "Exit Code: 5"},
    ]
    s = stub(1, "failed", TaskStates={"runner": {"Events": events, "Restarts": 2}})
    assert allocs.health_killed(s)
    assert allocs.exit_detail(s) == "Terminated: Exit Code: 5"
    assert not allocs.health_killed(stub(2))


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
        ("http://127.0.0.1:4646", ("127.0.0.1", 4646, "http")),
        ("https://nomad.example", ("nomad.example", 4646, "https")),
        ("nomad:5000", ("nomad", 5000, "http")),
        ("https://[::1]:4647/", ("::1", 4647, "https")),
    ],
)
def test_addr(addr: str, parsed: tuple[str, int, str]) -> None:
    """An agent's address splits into host, port (the service's default if absent), scheme."""
    assert parse_addr(addr, service="nomad", default_port=NOMAD_PORT) == parsed


@pytest.mark.parametrize("addr", ["ftp://x:1", "http://:80", "http://h:notaport"])
def test_bad_addr(addr: str) -> None:
    """An address that is no http(s) URL is a ConfigError naming the service and the value."""
    with pytest.raises(ConfigError, match=f"consul addr {re.escape(repr(addr))}"):
        parse_addr(addr, service="consul", default_port=CONSUL_PORT)


def test_both_adapters_read_their_addr() -> None:
    """The Nomad client and Consul discovery take their address apart the same way."""
    client = nc.NomadClient(NomadConfig(addr="nomad.example", python=sys.executable))
    assert client._nomad.address == "http://nomad.example:4646"
    discovery = dc.ConsulDiscovery(ConsulConfig(addr="https://consul"), "yurt")
    assert (discovery._host, discovery._port, discovery._scheme) == ("consul", 8500, "https")
    # The model refuses it when the configuration is read; a copy made past the checks still
    # fails when the client is built.
    with pytest.raises(ValueError, match="nomad addr"):
        NomadConfig(addr="ftp://x", python=sys.executable)
    unchecked = NomadConfig(python=sys.executable).model_copy(update={"addr": "ftp://x"})
    with pytest.raises(ConfigError, match="nomad addr"):
        nc.NomadClient(unchecked)


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

    def __init__(self, replies: list[tuple[int, list[dict[str, Any]]] | Exception]) -> None:
        self.replies = replies
        self.asked: list[int] = []
        self.done = asyncio.Event()

    async def allocations(self, job_id: str, *, index: int = 0) -> tuple[int, list[Any]]:
        self.asked.append(index)
        if not self.replies:
            self.done.set()
            await asyncio.Event().wait()
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def task_log_tail(self, alloc_id: str, task: str, kind: str = "stderr") -> str:
        return "yurt-runner-failure: setup: boom\n"

    async def allocation(self, alloc_id: str) -> dict[str, Any]:
        return stub(int(alloc_id[-1]))


def scripted_backend(client: Any) -> nb.NomadBackend:
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
    # The failed allocation holds its place in the Count until Nomad reschedules it.
    assert [(v.state, v.detail) for v in views] == [
        (RunnerState.PENDING, allocs.RESCHEDULING),
        (RunnerState.CRASH_BACKOFF, views[1].detail),
    ]


async def test_failure_listener_error_is_logged() -> None:
    """A failure listener that raises is logged; the other listeners still hear."""
    client = ScriptedClient([(10, [stub(1, "pending")]), (11, [stub(1, "failed")])])
    backend = scripted_backend(client)
    failures: list[StartFailure] = []

    def broken(failure: StartFailure) -> None:
        raise RuntimeError("listener bug")

    backend.add_failure_listener(broken)
    backend.add_failure_listener(failures.append)
    with capture_logs() as logs:
        await follow(backend, client)
    assert [f.runner_id for f in failures] == ids(1)
    assert "failure_listener_failed" in [e["event"] for e in logs]


def failing_eval(create_index: int, *, filtered: bool = True) -> dict[str, Any]:
    metric = {
        "NodesEvaluated": 2,
        "NodesFiltered": 2 if filtered else 1,
        "ConstraintFiltered": {"missing devices": 2 if filtered else 1},
        "NodesExhausted": 0 if filtered else 1,
        "DimensionExhausted": None if filtered else {"devices: no devices match request": 1},
        "CoalescedFailures": 0,
    }
    return {
        "ID": f"{create_index:08d}-eval",
        "Status": "complete",
        "CreateIndex": create_index,
        "FailedTGAllocs": {"runner": metric},
    }


async def test_placement_failure_is_told_once_when_nothing_can_run() -> None:
    """A final placement failure fails callers once; not while a runner of the app lives, and
    again when the last one goes; it clears on a later evaluation without failures."""
    backend = scripted_backend(ScriptedClient([]))
    failures: list[StartFailure] = []
    backend.add_failure_listener(failures.append)
    app = nb._App("o/a", "yurt-o-a", target=2, ask="1 nvidia/gpu")
    backend._apps["o/a"] = app
    backend._observe(app, [stub(1, CreateIndex=90)])  # a runner placed before the failure
    backend._observe_evals(app, [failing_eval(120)])
    why = backend.unplaced("o/a")
    assert why is not None and not why.final  # a runner still runs: callers may be served
    assert failures == []

    backend._observe(app, [stub(1, "failed", CreateIndex=90)])  # the last runner goes
    assert len(failures) == 1
    failure = failures[0]
    assert (failure.error_type, failure.final) == ("placement_failed", True)
    assert failure.detail.startswith("Nomad cannot place a runner of o/a: Constraint ")
    assert "each asks for 1 nvidia/gpu" in failure.detail
    why = backend.unplaced("o/a")
    assert why is not None and why.final and why.detail == failure.detail

    backend._observe_evals(app, [failing_eval(120)])  # a wake-up without news
    backend._observe(app, [stub(1, "failed", CreateIndex=90)])
    assert len(failures) == 1

    backend._observe_evals(
        app, [failing_eval(120), {"ID": "ok", "Status": "complete", "CreateIndex": 130}]
    )
    assert backend.unplaced("o/a") is None


async def test_nodes_only_full_is_not_final_and_a_later_placement_voids_final() -> None:
    """Exhausted nodes may free up; an allocation placed after the failure means it may fit."""
    backend = scripted_backend(ScriptedClient([]))
    failures: list[StartFailure] = []
    backend.add_failure_listener(failures.append)
    app = nb._App("o/a", "yurt-o-a", target=2)
    backend._apps["o/a"] = app
    backend._observe_evals(app, [failing_eval(120, filtered=False)])
    why = backend.unplaced("o/a")
    assert why is not None and not why.final and failures == []
    # A blocked evaluation run again keeps its first figures: a placement since says more.
    backend._observe(app, [stub(1, "failed", CreateIndex=125)])
    backend._observe_evals(app, [failing_eval(121)])
    why = backend.unplaced("o/a")
    assert why is not None and not why.final and failures == []


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


async def test_watch_survives_any_error() -> None:
    """An exception that is no ClusterError (a bug, an odd reply) is logged; the watch goes on."""
    client = ScriptedClient([(10, []), ValueError("odd reply"), (11, [stub(1)])])
    backend = scripted_backend(client)
    with capture_logs() as logs:
        app = await follow(backend, client)
    assert client.asked == [0, 10, 10, 11]
    assert list(app.allocs) == ids(1)
    assert [e["error"] for e in logs if e["event"] == "nomad_watch_failed"] == ["odd reply"]


# -- scaling: the Count asked for and the Count Nomad accepted ------------------------------


class ScaleClient:
    """Records scale and stop calls; each call takes the next scripted error (None: success)."""

    def __init__(self, *errors: ClusterError | None) -> None:
        self.errors = list(errors)
        self.counts: list[int] = []
        self.stopped: list[str] = []

    def _next(self) -> None:
        if self.errors and (error := self.errors.pop(0)) is not None:
            raise error

    async def scale(self, job_id: str, group: str, count: int, message: str) -> dict[str, Any]:
        self.counts.append(count)
        self._next()
        return {}

    async def stop_allocation(self, alloc_id: str) -> dict[str, Any]:
        self.stopped.append(alloc_id)
        self._next()
        return {}


def unavailable() -> ClusterUnavailable:
    return ClusterUnavailable("nomad scale: HTTP 500: No cluster leader", service="nomad")


def blocked() -> ClusterBadRequest:
    text = "job scaling blocked due to active deployment"
    return ClusterBadRequest(f"nomad scale: {text}", service="nomad", status=400, message=text)


def refused() -> ClusterBadRequest:
    text = "group count was greater than scaling policy maximum: 9 > 3"
    return ClusterBadRequest(f"nomad scale: {text}", service="nomad", status=400, message=text)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaling, "RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(scaling, "RETRY_MAX_S", 0.02)


def scaling_backend(client: ScaleClient, count: int) -> tuple[nb.NomadBackend, nb._App]:
    backend = scripted_backend(client)
    app = nb._App("o/a", "yurt-o-a", target=count, accepted=count)
    app.allocs = {AID.format(n): stub(n) for n in range(count)}
    backend._apps["o/a"] = app
    return backend, app


async def settle(backend: nb.NomadBackend, app: nb._App) -> None:
    if app.scaler is not None:
        await asyncio.wait_for(app.scaler, 10)


def keep_log(backend: nb.NomadBackend) -> list[tuple[str, str]]:
    """The (app, runner) pairs the backend reports kept, as it reports them."""
    kept: list[tuple[str, str]] = []
    backend.add_keep_listener(lambda app_id, runner_id: kept.append((app_id, runner_id)))
    return kept


def states(backend: nb.NomadBackend) -> dict[str, RunnerState]:
    return {v.runner_id: v.state for v in backend.runners("o/a")}


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("error", [unavailable, blocked], ids=["unavailable", "blocked"])
async def test_scale_refused_for_now_is_retried_until_it_lands(error: Any) -> None:
    """A scale Nomad refuses for now (no leader, a deployment) returns, and lands later."""
    client = ScaleClient(error(), error(), None)
    backend, app = scaling_backend(client, 0)
    await backend.set_target("o/a", 1)  # raises nothing
    assert backend.target("o/a") == 1
    assert app.accepted == 0
    await settle(backend, app)
    assert client.counts == [1, 1, 1]
    assert app.accepted == 1


@pytest.mark.usefixtures("fast_retries")
async def test_retry_sends_the_latest_target() -> None:
    """A target changed while a retry is pending is the one that lands."""
    client = ScaleClient(unavailable(), None, None)
    backend, app = scaling_backend(client, 0)
    await backend.set_target("o/a", 1)
    await backend.set_target("o/a", 3)  # the retry in flight takes it
    await settle(backend, app)
    assert client.counts == [1, 3]
    assert (backend.target("o/a"), app.accepted) == (3, 3)


async def test_scale_refused_for_good_keeps_the_accepted_count() -> None:
    """A scale Nomad refuses outright raises, and the target goes back to Nomad's Count."""
    client = ScaleClient(refused())
    backend, _ = scaling_backend(client, 2)
    with pytest.raises(ClusterBadRequest, match="maximum"):
        await backend.set_target("o/a", 9)
    assert backend.target("o/a") == 2  # so that the scheduler asks again


@pytest.mark.usefixtures("fast_retries")
async def test_retry_refused_for_good_gives_the_runner_back() -> None:
    """A lowering that later fails for good restores the target and the runner's state."""
    client = ScaleClient(unavailable(), refused())
    backend, app = scaling_backend(client, 2)
    kept = keep_log(backend)
    with capture_logs() as logs:
        await backend.stop_runner("o/a", AID.format(1), reason="keep_alive", replace=False)
        assert backend.target("o/a") == 1
        assert AID.format(1) in app.stopping
        assert kept == []
        await settle(backend, app)
    assert backend.target("o/a") == 2
    assert app.stopping == set() and app.lowering == set()
    assert "nomad_scale_failed" in [e["event"] for e in logs]
    # stop_runner returned, so nobody else tells the router the runner serves on.
    assert kept == [("o/a", AID.format(1))]
    assert states(backend)[AID.format(1)] != RunnerState.DRAINING


async def test_failed_lowering_raises_and_leaves_the_runner_running() -> None:
    """stop_runner(replace=False) refused for good raises; the runner is not draining."""
    client = ScaleClient(refused())
    backend, app = scaling_backend(client, 2)
    kept = keep_log(backend)
    with pytest.raises(ClusterBadRequest):
        await backend.stop_runner("o/a", AID.format(1), reason="keep_alive", replace=False)
    assert backend.target("o/a") == 2
    assert app.stopping == set()
    assert states(backend)[AID.format(1)] != RunnerState.DRAINING
    assert kept == []  # the caller got the error: it reinstates the runner itself


@pytest.mark.usefixtures("fast_retries")
async def test_lowering_retried_keeps_the_runner_stopping() -> None:
    """stop_runner(replace=False) during a leader election drains the runner and lands later."""
    client = ScaleClient(unavailable(), None)
    backend, app = scaling_backend(client, 2)
    await backend.stop_runner("o/a", AID.format(1), reason="keep_alive", replace=False)
    assert AID.format(1) in app.stopping
    await settle(backend, app)
    assert client.counts == [1, 1]
    assert app.accepted == 1 and app.lowering == set()
    assert AID.format(1) in app.stopping  # until Nomad lists it stopped


class Source:
    """The scheduler's load source; reinstate is also the router's side of the keep listener."""

    def __init__(self) -> None:
        self.now = AppLoad()
        self.retired: set[str] = set()

    def load(self, app_id: str) -> AppLoad:
        return self.now

    def retire(self, app_id: str, runner_id: str) -> None:
        self.retired.add(runner_id)

    def reinstate(self, app_id: str, runner_id: str) -> None:
        self.retired.discard(runner_id)


@pytest.mark.usefixtures("fast_retries")
async def test_raise_overtaking_a_lowering_keeps_the_runner() -> None:
    """A raise that lands before a deferred lowering keeps the runner: routed, not draining.

    Left stopping, the runner showed DRAINING for ever and stayed retired; pick_stops stepped
    over it (lowering the Count onto it instead of the runner picked), and the scheduler did
    not count it as live, so its "unplaced" lowering stopped the highest index, a busy runner.
    """
    client = ScaleClient(blocked(), None, None)
    backend, app = scaling_backend(client, 3)
    source = Source()
    backend.add_keep_listener(source.reinstate)
    scheduler = Scheduler(backend, SchedulerConfig(), source=source)
    r0, r1, r2, r3 = ids(0, 1, 2, 3)
    # Runner 2 is idle past keep_alive; a deployment holds the lower Count back...
    idle = AppLoad(runners=tuple(RunnerLoad(r, 0, 0.0) for r in (r0, r1, r2)))
    await scheduler._lower("o/a", SPEC, idle, 3, Decision(2, stop=(r2,)))
    assert source.retired == {r2} and client.counts == [2]
    # ...and demand raises the target again before it lands: Nomad takes 3 and keeps runner 2.
    await backend.set_target("o/a", 3)
    await settle(backend, app)
    assert client.counts == [2, 3]
    assert (app.target, app.accepted, app.stopping, app.lowering) == (3, 3, set(), set())
    assert source.retired == set()
    assert states(backend)[r2] != RunnerState.DRAINING
    assert backend.pick_stops("o/a", [r1]) == []  # runner 2 is the highest: it blocks
    # Up to 4: runner 3 takes requests; runner 1 idles past keep_alive, 2 not yet.
    await backend.set_target("o/a", 4)
    app.allocs[r3] = stub(3)
    busy = AppLoad(
        runners=(
            RunnerLoad(r0, 1, None),
            RunnerLoad(r1, 0, 0.0),
            RunnerLoad(r2, 0, 50.0),
            RunnerLoad(r3, 1, None),
        )
    )
    await scheduler._lower("o/a", SPEC, busy, 4, Decision(3, stop=(r1,)))
    assert client.counts == [2, 3, 4]  # a Count of 3 would stop runner 3, which is busy
    assert source.retired == set()


async def test_lowering_that_stops_another_runner_keeps_the_one_asked_for() -> None:
    """Nomad stops the highest index: a lower Count for a lower index keeps that runner."""
    client = ScaleClient()
    backend, app = scaling_backend(client, 2)
    kept = keep_log(backend)
    with capture_logs() as logs:
        await backend.stop_runner("o/a", AID.format(0), reason="keep_alive", replace=False)
    assert "nomad_stop_not_highest" in [e["event"] for e in logs]
    assert client.counts == [1]
    assert kept == [("o/a", AID.format(0))]
    assert app.stopping == set(ids(1))  # the one Nomad stops instead: nobody routes to it
    assert states(backend)[AID.format(1)] == RunnerState.DRAINING


async def test_lowering_a_later_raise_spared_is_kept_once_nomad_shows_it() -> None:
    """A raise Nomad takes before acting on a lower Count it took: the runner may stay.

    Nomad's scheduler reads the job as it is when it gets to it, so whether the runner stops
    shows only in the allocations: once Nomad runs no more than its Count and the runner is
    among them, it is kept.
    """
    client = ScaleClient()
    backend, app = scaling_backend(client, 3)
    kept = keep_log(backend)
    r2 = AID.format(2)
    await backend.stop_runner("o/a", r2, reason="keep_alive", replace=False)
    backend._observe(app, [stub(0), stub(1), stub(2)])  # Nomad has not acted on Count 2 yet
    assert r2 in app.stopping
    await backend.set_target("o/a", 3)
    assert client.counts == [2, 3]
    assert r2 in app.stopping and kept == []  # it may still stop
    backend._observe(app, [stub(0), stub(1), stub(2)])  # it did not
    assert kept == [("o/a", r2)]
    assert app.stopping == set()


async def test_lowering_that_lands_stops_the_runner() -> None:
    """Once Nomad acts on the lower Count, the runner is draining, then gone: nothing kept."""
    client = ScaleClient()
    backend, app = scaling_backend(client, 3)
    kept = keep_log(backend)
    r2 = AID.format(2)
    await backend.stop_runner("o/a", r2, reason="keep_alive", replace=False)
    backend._observe(app, [stub(0), stub(1), stub(2, desired="stop")])
    assert states(backend)[r2] == RunnerState.DRAINING
    backend._observe(app, [stub(0), stub(1), stub(2, "complete", desired="stop")])
    assert r2 not in states(backend)
    assert kept == []


async def test_failure_before_nomad_acts_on_a_lower_count_spares_nobody() -> None:
    """Another allocation fails after Nomad took a lower Count, before it acted on it.

    Nomad counts the failed allocation (it waits to be rescheduled), so the lower Count still
    stops the runner asked for: it is not kept (the router would route to it as it stops).
    """
    client = ScaleClient()
    backend, app = scaling_backend(client, 3)
    kept = keep_log(backend)
    r0, r2 = ids(0, 2)
    await backend.stop_runner("o/a", r2, reason="keep_alive", replace=False)
    now = [stub(0, "failed"), stub(1), stub(2)]
    backend._observe(app, now)
    assert kept == [] and r2 in app.stopping
    assert states(backend)[r2] == RunnerState.DRAINING
    assert nomad_stops(now, 2) == [r2]
    backend._observe(app, [stub(0, "failed"), stub(1), stub(2, desired="stop")])
    backend._observe(app, [stub(0, "failed"), stub(1)])
    assert kept == [] and app.stopping == set()
    assert states(backend)[r0] == RunnerState.PENDING


@pytest.mark.usefixtures("fast_retries")
async def test_stop_allocation_refused_for_now_is_retried() -> None:
    """stop_runner(replace=True) while Nomad has no leader drains the runner; the stop lands."""
    client = ScaleClient(unavailable(), unavailable(), None)
    backend, app = scaling_backend(client, 1)
    kept = keep_log(backend)
    r0 = AID.format(0)
    await backend.stop_runner("o/a", r0, reason="503", replace=True)  # raises nothing
    assert states(backend)[r0] == RunnerState.DRAINING
    await asyncio.wait_for(asyncio.gather(*backend._chores), 10)
    assert client.stopped == ids(0, 0, 0)
    assert r0 in app.stopping and kept == []
    assert backend.target("o/a") == 1


@pytest.mark.usefixtures("fast_retries")
async def test_stop_allocation_refused_for_good_keeps_the_runner() -> None:
    """A stop Nomad refuses for good, at once or on a retry, is logged; the runner is kept."""
    for errors in ([refused()], [unavailable(), refused()]):
        client = ScaleClient(*errors)
        backend, app = scaling_backend(client, 1)
        kept = keep_log(backend)
        r0 = AID.format(0)
        with capture_logs() as logs:
            await backend.stop_runner("o/a", r0, reason="503", replace=True)  # raises nothing
            await asyncio.wait_for(asyncio.gather(*backend._chores), 10)
        assert client.stopped == [r0] * len(errors)
        assert kept == [("o/a", r0)]
        assert app.stopping == set() and app.replacing == set()
        assert states(backend)[r0] != RunnerState.DRAINING
        assert "nomad_stop_failed" in [e["event"] for e in logs]
        assert backend.target("o/a") == 1


@pytest.mark.usefixtures("fast_retries")
async def test_stop_allocation_retry_ends_when_nomad_stops_it() -> None:
    """A retried stop ends without another call once the allocation is no longer live."""
    client = ScaleClient(unavailable())
    backend, app = scaling_backend(client, 1)
    r0 = AID.format(0)
    await backend.stop_runner("o/a", r0, reason="503", replace=True)
    backend._observe(app, [stub(0, desired="stop")])
    await asyncio.wait_for(asyncio.gather(*backend._chores), 10)
    assert client.stopped == [r0]


def test_pick_stops_never_names_a_busy_runner() -> None:
    """pick_stops stops at the first live runner, from the highest index, not a candidate."""
    backend, app = scaling_backend(ScaleClient(), 4)
    assert backend.pick_stops("o/a", ids(0, 2, 3)) == ids(3, 2)  # 1 is busy
    assert backend.pick_stops("o/a", ids(0, 1, 2)) == []  # 3 is busy
    assert backend.pick_stops("p/q", ids(0)) == []
    app.stopping = set(ids(3))  # a lower Count is already stopping it
    assert backend.pick_stops("o/a", ids(2)) == ids(2)
    app.replacing = set(ids(3))  # stopped for a replacement, which takes index 3
    assert backend.pick_stops("o/a", ids(2)) == []


async def test_stops_in_pick_order_are_each_the_highest() -> None:
    """Stopping pick_stops' answer in order lowers the Count past each one, no warning."""
    client = ScaleClient()
    backend, _ = scaling_backend(client, 4)
    picked = backend.pick_stops("o/a", ids(1, 2, 3))
    with capture_logs() as logs:
        for runner_id in picked:
            await backend.stop_runner("o/a", runner_id, reason="keep_alive", replace=False)
    assert client.counts == [3, 2, 1]
    assert "nomad_stop_not_highest" not in [e["event"] for e in logs]


def failed_first(load: AppLoad) -> tuple[nb.NomadBackend, nb._App, ScaleClient, Scheduler, Source]:
    """Count 3: runner 0 failed and waits to be rescheduled, runners 1 and 2 serve."""
    client = ScaleClient()
    backend, app = scaling_backend(client, 3)
    app.allocs[AID.format(0)] = stub(0, "failed")
    source = Source()
    source.now = load
    backend.add_keep_listener(source.reinstate)
    scheduler = Scheduler(backend, SchedulerConfig(), source=source)
    return backend, app, client, scheduler, source


async def test_failed_allocation_is_no_unplaced_runner() -> None:
    """A failed allocation Nomad counts is no room to lower the Count onto a busy runner.

    Runner 0 failed and waits to be rescheduled, runner 1 idles, runner 2 is busy. Taken for
    an unplaced runner, the failure let the scheduler lower the Count to 2, and Nomad stopped
    runner 2. It is listed as a runner that is not routable: nothing is unplaced, and the busy
    runner 2, the highest index, holds the Count where it is.
    """
    r0, r1, r2 = ids(0, 1, 2)
    load = AppLoad(runners=(RunnerLoad(r1, 0, 0.0), RunnerLoad(r2, 1, None)))
    backend, app, client, scheduler, source = failed_first(load)
    await scheduler._lower("o/a", SPEC, load, 3, Decision(2, stop=(r1,)))
    assert client.counts == []
    assert source.retired == set() and app.stopping == set()
    assert nomad_stops(list(app.allocs.values()), backend.target("o/a")) == []
    views = {v.runner_id: v for v in backend.runners("o/a")}
    assert (views[r0].state, views[r0].detail) == (RunnerState.PENDING, allocs.RESCHEDULING)


async def test_failed_allocation_lowering_by_two_spares_the_busy_runner() -> None:
    """Lowering by two with a failed low index: only the idle highest runner goes."""
    r1, r2 = ids(1, 2)
    load = AppLoad(runners=(RunnerLoad(r1, 1, None), RunnerLoad(r2, 0, 0.0)))
    backend, app, client, scheduler, source = failed_first(load)
    await scheduler._lower("o/a", SPEC, load, 3, Decision(1, stop=(r2,)))
    assert client.counts == [2]
    assert source.retired == {r2}
    assert nomad_stops(list(app.allocs.values()), backend.target("o/a")) == [r2]


async def test_failed_highest_allocation_is_a_free_stop() -> None:
    """A failed allocation at the highest index goes first when the Count drops."""
    client = ScaleClient()
    backend, app = scaling_backend(client, 3)
    app.allocs[AID.format(2)] = stub(2, "failed")
    r0, r1, r2 = ids(0, 1, 2)
    source = Source()
    scheduler = Scheduler(backend, SchedulerConfig(), source=source)
    load = AppLoad(runners=(RunnerLoad(r0, 1, None), RunnerLoad(r1, 0, 0.0)))
    await scheduler._lower("o/a", SPEC, load, 3, Decision(1, stop=(r1,)))
    assert client.counts == [2, 1]
    assert nomad_stops(list(app.allocs.values()), 1) == [r2, r1]
    assert app.stopping == {r1, r2}


async def test_runners_a_lower_count_stops_unasked_are_stopping() -> None:
    """A Count above max_concurrency brought down: the runners Nomad stops are draining.

    The scheduler neither counts them live nor lowers again onto the busy runners below them.
    """
    client = ScaleClient()
    backend, app = scaling_backend(client, 4)
    app.target = 2
    await backend._scale(app)
    r0, r1, r2, r3 = ids(0, 1, 2, 3)
    assert app.stopping == {r2, r3}
    assert {r: states(backend)[r] for r in (r2, r3)} == dict.fromkeys(
        (r2, r3), RunnerState.DRAINING
    )
    source = Source()
    scheduler = Scheduler(backend, SchedulerConfig(), source=source)
    load = AppLoad(
        runners=(
            RunnerLoad(r0, 0, 0.0),
            RunnerLoad(r1, 1, None),
            RunnerLoad(r2, 0, 0.0),
            RunnerLoad(r3, 0, 0.0),
        )
    )
    await scheduler._lower("o/a", SPEC, load, 2, Decision(1, stop=(r3,)))
    assert client.counts == [2]  # runner 1 is busy: nothing more goes
    assert source.retired == set()
    # Nomad acts on Count 2; nothing is kept.
    kept = keep_log(backend)
    backend._observe(app, [stub(0), stub(1), stub(2, desired="stop"), stub(3, desired="stop")])
    backend._observe(app, [stub(0), stub(1)])
    assert kept == [] and app.stopping == set()


async def test_refusal_after_a_count_covering_the_runner_is_not_its_callers() -> None:
    """stop_runner does not raise for a later target's refusal once its Count landed.

    The target moved while the lowering was out; Nomad took the lowering and refused the
    next Count. Raising made the caller route to the runner again while Nomad stopped it.
    """

    class Racing(ScaleClient):
        async def scale(self, job_id: str, group: str, count: int, message: str) -> dict[str, Any]:
            if not self.counts:
                app.target = 4  # a raise comes in while the call is out
            return await super().scale(job_id, group, count, message)

    client = Racing(None, refused())
    backend, app = scaling_backend(client, 3)
    kept = keep_log(backend)
    r2 = AID.format(2)
    with capture_logs() as logs:
        await backend.stop_runner("o/a", r2, reason="keep_alive", replace=False)
    assert client.counts == [2, 4]
    assert "nomad_scale_failed" in [e["event"] for e in logs]
    assert (app.accepted, backend.target("o/a")) == (2, 2)
    assert r2 in app.stopping and kept == []


# -- re-registering with a lower max_concurrency -------------------------------------------


class JobClient(ScaleClient):
    """A job that has ``count`` allocations; records scale and register calls in order."""

    def __init__(self, count: int, *errors: ClusterError | None, digest: str = "old") -> None:
        super().__init__(*errors)
        self.job: dict[str, Any] = {
            "ID": "yurt-o-a",
            "Meta": {nb.META_DIGEST: digest},
            "TaskGroups": [{"Name": "runner", "Count": count}],
        }
        self.stubs = [stub(n) for n in range(count)]
        self.calls: list[tuple[Any, ...]] = []
        self.variables: dict[str, dict[str, str]] = {}

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self.job if job_id == self.job["ID"] else None  # no surge job left behind

    async def allocations(self, job_id: str, *, index: int = 0) -> tuple[int, list[Any]]:
        if index:
            await asyncio.Event().wait()  # the watch: nothing new
        return 1, list(self.stubs)

    async def scale(self, job_id: str, group: str, count: int, message: str) -> dict[str, Any]:
        self.calls.append(("scale", count))
        return await super().scale(job_id, group, count, message)

    async def list_variables(self, prefix: str) -> list[dict[str, Any]]:
        return []  # no secrets set

    async def put_variable(self, path: str, items: dict[str, str]) -> None:
        self.variables[path] = items  # the job's Variable, written before its register

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        assert f"nomad/jobs/{body['Job']['ID']}" in self.variables
        group = body["Job"]["TaskGroups"][0]
        self.calls.append(("register", group["Count"], group["Scaling"]["Max"]))
        self.calls.append(("preserve", body["PreserveCounts"]))
        return {"EvalID": "e"}


@pytest.fixture
def payload(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A payload file whose header is not read (the job body is all these tests look at)."""
    monkeypatch.setattr(nb, "read_header", lambda data: (None, b""))
    path = tmp_path / "p.yurt"
    path.write_bytes(b"x")
    return path


def job_backend(client: JobClient) -> nb.NomadBackend:
    config = NomadConfig(addr="http://127.0.0.1:1", python=sys.executable)
    ref = PayloadRef(url="http://x/p", sha256="ab" * 32, token="t", revision="r")
    return nb.NomadBackend(config, lambda app_id, header: ref, client=client)  # type: ignore[arg-type]


async def test_adopted_count_above_max_is_scaled_down_before_registering(payload: Any) -> None:
    """A job left at Count 4 by a server whose max was 4, adopted with max 2, runs 2.

    The scale goes first, while the old job's Scaling.Max still allows Count 4 to drop to 2;
    re-registering then preserves 2, which the new Scaling.Max allows. The two highest
    indexes stop, whatever they do: that is logged.
    """
    client = JobClient(4)
    backend = job_backend(client)
    kept = keep_log(backend)
    try:
        with capture_logs() as logs:
            await backend.ensure_app("o/a", SPEC.model_copy(update={"max_concurrency": 2}), payload)
        assert client.calls == [("scale", 2), ("register", 2, 2), ("preserve", True)]
        app = backend._apps["o/a"]
        assert (backend.target("o/a"), app.accepted) == (2, 2)
        [warning] = [e for e in logs if e["event"] == "nomad_count_above_max"]
        assert (warning["count"], warning["max_concurrency"]) == (4, 2)
        assert warning["stopping"] == ids(3, 2)
        assert kept == []
        # Nomad stops them: they are draining (the scheduler counts them no more).
        assert app.stopping == set(ids(3, 2))
        assert {r: states(backend)[r] for r in ids(3, 2)} == dict.fromkeys(
            ids(3, 2), RunnerState.DRAINING
        )
        # A raise to 2 is no lowering in disguise: Nomad has 2 already.
        await backend.set_target("o/a", 2)
        assert client.calls[-1] == ("scale", 2)
    finally:
        await backend.stop()


async def test_redeploy_lowering_max_lowers_the_count(payload: Any) -> None:
    """A new revision with a lower max_concurrency brings Nomad's Count down to it."""
    client = JobClient(0)
    backend = job_backend(client)
    try:
        await backend.ensure_app("o/a", SPEC, payload)
        await backend.set_target("o/a", 4)
        client.calls.clear()
        await backend.ensure_app("o/a", SPEC.model_copy(update={"max_concurrency": 3}), payload)
        assert client.calls == [("scale", 3), ("register", 3, 3), ("preserve", True)]
        app = backend._apps["o/a"]
        assert (backend.target("o/a"), app.accepted) == (3, 3)
        client.calls.clear()
        await backend.ensure_app("o/a", SPEC.model_copy(update={"max_concurrency": 3}), payload)
        assert client.calls == []  # nothing changed
    finally:
        await backend.stop()


@pytest.mark.usefixtures("fast_retries")
async def test_count_above_max_with_the_scale_deferred_registers_the_lower_count(
    payload: Any,
) -> None:
    """While a deployment blocks the scale down, the job is registered with the lower Count.

    Preserving Nomad's Count would keep it above the new Scaling.Max until the retry lands.
    """
    client = JobClient(4, blocked(), blocked())
    backend = job_backend(client)
    try:
        await backend.ensure_app("o/a", SPEC.model_copy(update={"max_concurrency": 2}), payload)
        assert client.calls == [("scale", 2), ("register", 2, 2), ("preserve", False)]
        app = backend._apps["o/a"]
        assert (backend.target("o/a"), app.accepted) == (2, 2)
        await settle(backend, app)  # the retry sends the same Count: no change
        assert client.calls[3:] == [("scale", 2), ("scale", 2)]
        assert (backend.target("o/a"), app.accepted) == (2, 2)
    finally:
        await backend.stop()


@pytest.mark.usefixtures("fast_retries")
async def test_target_moved_while_registering_the_lower_count_is_sent(payload: Any) -> None:
    """A target that moves while the job with the lowered Count is registered is sent after.

    The deferred scale can land before the register that carries the lowered Count: Nomad
    then has the register's Count, and the target asked for meanwhile must follow it.
    """

    class Racing(JobClient):
        async def register(self, body: dict[str, Any]) -> dict[str, Any]:
            app = backend._apps["o/a"]
            await backend.set_target("o/a", 1)  # the scheduler lowers by one meanwhile
            assert app.scaler is not None
            await asyncio.wait_for(app.scaler, 10)  # and the retry lands first
            return await super().register(body)

    client = Racing(4, blocked(), None)
    backend = job_backend(client)
    try:
        await backend.ensure_app("o/a", SPEC.model_copy(update={"max_concurrency": 2}), payload)
        assert client.calls == [
            ("scale", 2),
            ("scale", 1),
            ("register", 2, 2),
            ("preserve", False),
            ("scale", 1),
        ]
        app = backend._apps["o/a"]
        assert (backend.target("o/a"), app.accepted) == (1, 1)
    finally:
        await backend.stop()


async def test_count_above_max_refused_raises_and_registers_nothing(payload: Any) -> None:
    """A scale down Nomad refuses for good fails ensure_app; target stays Nomad's Count."""
    client = JobClient(4, refused())
    backend = job_backend(client)
    try:
        with pytest.raises(ClusterBadRequest):
            await backend.ensure_app("o/a", SPEC.model_copy(update={"max_concurrency": 2}), payload)
        assert client.calls == [("scale", 2)]
        app = backend._apps["o/a"]
        assert (backend.target("o/a"), app.accepted) == (4, 4)
    finally:
        await backend.stop()


# -- the client against a small HTTP server ------------------------------------------------


class FakeNomad:
    """An HTTP server answering a few Nomad paths: HTML, JSON, or a reply held back."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeNomad:
        app = web.Application()
        app.router.add_get("/v1/agent/self", self.agent)
        app.router.add_post("/v1/job/{id}/scale", self.maintenance)
        app.router.add_get("/v1/job/{id}/allocations", self.allocations)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.runner is not None
        await self.runner.cleanup()

    async def agent(self, request: web.Request) -> web.Response:
        return web.json_response({"config": {"Version": {"Version": "1.9.0"}}})

    async def maintenance(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Down for maintenance</body></html>")

    async def allocations(self, request: web.Request) -> web.Response:
        if request.query.get("index", "0") != "0":
            self.held.set()
            await self.release.wait()
        return web.json_response([], headers={"X-Nomad-Index": "7"})


def client_for(url: str, **extra: Any) -> nc.NomadClient:
    config = NomadConfig(addr=url, python=sys.executable, retries=0, blocking_wait=30.0)
    return nc.NomadClient(config, **extra)


async def test_html_reply_is_a_cluster_error() -> None:
    """A 200 whose body is not JSON (a proxy's page) is ClusterUnavailable naming the body."""
    async with FakeNomad() as server:
        client = client_for(server.url)
        try:
            with pytest.raises(ClusterUnavailable, match=r"not JSON.*maintenance"):
                await client.scale("j", "runner", 1, "m")
        finally:
            await client.close()


async def test_blocking_query_does_not_hold_up_short_calls() -> None:
    """With every short-call thread taken, a blocking query still runs, and calls pass it."""
    async with FakeNomad() as server:
        client = client_for(server.url, max_workers=1)
        try:
            watch = asyncio.create_task(client.allocations("j", index=5))
            await asyncio.wait_for(server.held.wait(), 10)
            assert await asyncio.wait_for(client.agent_version(), 10) == "1.9.0"
            assert not watch.done()
            server.release.set()
            assert await asyncio.wait_for(watch, 10) == (7, [])
        finally:
            await client.close()


async def test_foreign_runtime_error_is_not_unavailable() -> None:
    """A RuntimeError from inside python-nomad is a plain ClusterError, not retried."""
    client = client_for("http://127.0.0.1:1")
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("python-nomad bug")

    try:
        with pytest.raises(ClusterError) as info:
            await client._call("scale", broken)
        assert type(info.value) is ClusterError
        assert calls == [1]
    finally:
        await client.close()


async def test_closed_client_cancels_waiting_calls() -> None:
    """close() fails a call still waiting for a thread with ClusterUnavailable, at once."""
    client = client_for("http://127.0.0.1:1", max_workers=1)
    release = threading.Event()
    first = asyncio.create_task(client._call("first", lambda: release.wait(30)))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(client._call("second", lambda: "ran"))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(ClusterUnavailable, match="closed"):
        await asyncio.wait_for(second, DEADLINE)
    release.set()
    assert await asyncio.wait_for(first, DEADLINE) is True
    with pytest.raises(ClusterUnavailable, match="closed"):
        await client.agent_version()
