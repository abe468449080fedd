"""``yurt undeploy`` on the Nomad backend, against the Nomad and Consul doubles: the app's job is
stopped and purged, not left for a garbage collector that never takes a running service job."""

from __future__ import annotations

import json

from test_nomad_server import Server, deploy, server  # noqa: F401 - the fixture

from yurt.backends.nomad.naming import job_id

from support import wait_until, yurt_command

ECHO = "examples/echo.py::Echo"


async def test_undeploy_stops_and_purges_the_job(server: Server) -> None:  # noqa: F811
    """The job is purged (gone, not merely stopped), its allocations stop and leave Consul, the
    router answers 404 ``app_not_found``, and a later deploy starts the app afresh."""
    echo = await deploy(server, ECHO)
    job = job_id("yurt", echo["app_id"])
    assert await server.post(echo["url"], {"prompt": "hi"}) == (200, {"text": "echo: hi"})
    [alloc] = server.running(echo["app_id"])
    await wait_until(lambda: server.consul.entries(job, passing=True), what="echo in Consul")

    code, out, err = await yurt_command("undeploy", "echo", "--server", server.url, "--json")
    assert code == 0, err
    assert json.loads(out)["app_id"] == "default/echo"
    assert ("DELETE", f"/v1/job/{job}") in server.nomad.requests
    # Purged: a stopped job would still be listed (with Stop set) until garbage collection.
    assert job not in server.nomad.jobs
    await wait_until(
        lambda: all(a.terminal for a in server.nomad.allocations(job)), what="allocations stopped"
    )
    assert alloc not in server.running(echo["app_id"])
    await wait_until(lambda: not server.consul.entries(job), what="echo out of Consul")
    status, body = await server.post(echo["url"], {"prompt": "hi"})
    assert (status, body["error_type"]) == (404, "app_not_found")
    assert "default/echo" not in await server.apps()
    async with server.session.get(f"{server.url}/_yurt/api/v1/apps") as resp:
        assert [a["app_id"] for a in await resp.json()] == []

    again = await deploy(server, ECHO)
    assert again["outcome"] == "created"
    assert await server.post(echo["url"], {"prompt": "back"}) == (200, {"text": "echo: back"})


async def test_an_undeploy_nomad_refuses_changes_nothing(server: Server) -> None:  # noqa: F811
    """Nomad unreachable: the undeploy fails with ``undeploy_failed`` and the app stays deployed
    and routed (forgotten, its job would run on with nothing left to stop it)."""
    echo = await deploy(server, ECHO)
    await server.nomad.stop()
    code, _, err = await yurt_command("undeploy", "default/echo", "--server", server.url)
    assert code == 1
    assert "default/echo was not undeployed (it still runs)" in err and "502" in err, err
    async with server.session.get(f"{server.url}/_yurt/api/v1/apps") as resp:
        assert [a["app_id"] for a in await resp.json()] == [echo["app_id"]]
    assert echo["app_id"] in await server.apps()
