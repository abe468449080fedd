"""``yurt jobspec`` and ``yurt run --backend nomad`` as a user runs them, against the doubles."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from doubles import ConsulDouble, NomadDouble, problems
from support import DEADLINE, start_yurt, wait_until, yurt_command

ROOT = Path(__file__).resolve().parents[2]
SHARED_VALIDATOR = ROOT.parent / "shared" / "tools" / "nomad_validate.py"


async def test_jobspec_of_the_gpu_example() -> None:
    """The printed job is valid and asks for 2 nvidia/gpu whose model matches an H100."""
    code, out, err = await yurt_command(
        "jobspec", "examples/gpu.py::GpuInfo", "--nomad-python", "/usr/bin/python3"
    )
    assert code == 0, err
    body: dict[str, Any] = json.loads(out)
    assert problems(body) == []
    if SHARED_VALIDATOR.exists():
        spec = importlib.util.spec_from_file_location("nomad_validate", SHARED_VALIDATOR)
        assert spec is not None and spec.loader is not None
        validator = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(validator)
        assert validator.problems(body) == []
    (device,) = body["Job"]["TaskGroups"][0]["Tasks"][0]["Resources"]["Devices"]
    assert (device["Name"], device["Count"]) == ("nvidia/gpu", 2)
    model, memory = device["Constraints"]
    assert model["LTarget"] == "${device.model}" and model["Operand"] == "regexp"
    assert re.search(model["RTarget"], "NVIDIA H100 80GB HBM3")
    assert not re.search(model["RTarget"], "NVIDIA H200")
    # An H100 80GB reports 81559 MiB, under 80 GiB: the floor must let it through.
    assert memory["LTarget"] == "${device.attr.memory}" and memory["Operand"] == ">="
    amount, unit = memory["RTarget"].split()
    assert unit == "MiB" and int(amount) <= 81559


async def test_run_on_nomad_removes_its_job_on_exit(tmp_path: Path) -> None:
    """yurt run --backend nomad serves through an allocation, and purges its job at Ctrl-C."""
    consul = ConsulDouble()
    await consul.start()
    nomad = NomadDouble(consul, tmp_path / "nomad", poll=0.2)
    await nomad.start()
    config = tmp_path / "yurt.toml"
    config.write_text(
        f"[nomad]\npython = {json.dumps(sys.executable)}\ncheck_interval = 1.0\n"
        "check_timeout = 1.0\nblocking_wait = 5.0\n[consul]\nblocking_wait = 5.0\n"
    )
    proc, app_url = await start_yurt(
        [
            *["run", "examples/echo.py::Echo", "--backend", "nomad", "--port", "0"],
            *["--data-dir", str(tmp_path / "data"), "--config", str(config)],
            *["--nomad-addr", nomad.url, "--consul-addr", consul.url],
        ],
        tmp_path / "run.out",
        r"serving Echo at (http://\S+)",
    )
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s,
            s.post(app_url, json={"prompt": "hi"}) as resp,
        ):
            assert (resp.status, await resp.json()) == (200, {"text": "echo: hi"})
        assert len(nomad.running("yurt-default-echo")) == 1
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
        assert "yurt-default-echo" not in nomad.jobs
        await wait_until(
            lambda: not nomad.running("yurt-default-echo"), what="the allocation to stop"
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nomad.stop()
        await consul.stop()
