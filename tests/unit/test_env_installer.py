"""The installer's pure parts: pip's configuration read and told to uv, installer output read
into build stages, and the console's bar."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from yurt.cli.env_progress import ConsoleProgress, bar, fraction
from yurt.envs_installer import (
    effective,
    find_uv,
    make_installer,
    parse_config_list,
    uv_settings,
)
from yurt.envs_progress import BuildEvent, OutputWatcher, ProgressFile, describe

# What `pip config list` printed on a machine with pip.conf files and PIP_* variables.
CONFIG_LIST = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/other.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/srv/ignored'
install.index-url='https://mirror.example/simple'
global.index-url='https://pypi.org/simple'
not a setting
"""


def test_pip_config_list_is_read_as_a_dict() -> None:
    """Each ``section.key='value'`` line is one entry; other lines are skipped."""
    config = parse_config_list(CONFIG_LIST)
    assert (
        config["global.extra-index-url"] == "file:///opt/pypi/simple file:///opt/pypi-more/simple"
    )
    assert config[":env:.default-timeout"] == "180"
    assert len(config) == 9


def test_a_variable_beats_install_which_beats_global() -> None:
    """pip's order: PIP_* over an [install] setting over a [global] one."""
    config = parse_config_list(CONFIG_LIST)
    assert effective(config, "find-links") == "/opt/wheels"
    assert effective(config, "cert") == "/etc/ssl/certs/ca-certificates.crt"
    assert effective(config, "index-url") == "https://mirror.example/simple"
    assert effective(config, "timeout") == "180"  # pip's PIP_DEFAULT_TIMEOUT spelling
    assert effective(config, "no-index") is None


def test_uv_is_told_the_indexes_links_constraints_and_certificate() -> None:
    """Every setting that decides where packages come from becomes uv's flag or variable."""
    told = uv_settings(parse_config_list(CONFIG_LIST))
    assert told.args == [
        "--index-strategy", "unsafe-best-match",
        "--index-url", "https://mirror.example/simple",
        "--extra-index-url", "file:///opt/pypi/simple",
        "--extra-index-url", "file:///opt/pypi-more/simple",
        "--find-links", "/opt/wheels",
        "--constraint", "/etc/xdg/pip/constraints.txt",
    ]  # fmt: skip
    assert told.env == {
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "UV_HTTP_TIMEOUT": "180",
    }


@pytest.mark.parametrize("value", ["1", "true", "yes", "on"])
def test_no_index_and_trusted_hosts_are_told_too(value: str) -> None:
    """pip's no-index (any of its true spellings) and trusted hosts have uv equivalents."""
    told = uv_settings({"global.no-index": value, "global.trusted-host": "a.example b.example"})
    assert "--no-index" in told.args
    assert told.args[-4:] == [
        "--allow-insecure-host", "a.example", "--allow-insecure-host", "b.example"
    ]  # fmt: skip


def test_pip_args_choosing_uvs_index_strategy_replace_yurts(tmp_path: Path) -> None:
    """An operator's own ``--index-strategy`` in ``pip_args`` is the only one uv gets."""
    if find_uv(sys.executable) is None:
        pytest.skip("uv is not installed here")
    mine = ["--index-strategy", "first-index"]
    uv = make_installer("uv", sys.executable, tmp_path / "bin" / "python", mine)
    assert uv.command(["a"]).count("--index-strategy") == 1
    assert uv.command(["a"])[-3:] == [*mine, "a"]
    default = make_installer("uv", sys.executable, tmp_path / "bin" / "python", [])
    assert "unsafe-best-match" in default.command(["a"])


def test_no_pip_configuration_tells_uv_only_how_to_pick_versions() -> None:
    """Nothing configured: uv keeps its defaults but takes the best version, as pip does."""
    assert uv_settings({}).args == ["--index-strategy", "unsafe-best-match"]


PIP_OUTPUT = """\
Looking in links: /opt/wheels
Collecting humanize>=4
  Downloading humanize-4.17.0-py3-none-any.whl (133 kB)
Collecting idna
  Using cached idna-3.10-py3-none-any.whl (70 kB)
Installing collected packages: idna, humanize
Successfully installed humanize-4.17.0 idna-3.10
"""
UV_OUTPUT = """\
Using Python 3.11.7 environment at: /data/envs/abc
Resolved 3 packages in 79ms
Prepared 3 packages in 8ms
Installed 3 packages in 15ms
 + humanize==4.17.0
"""


def feed(output: str) -> tuple[list[tuple[str, int]], int]:
    watcher = OutputWatcher(BuildEvent("d" * 32, "resolving", step=1, steps=1))
    seen = [watcher.feed(line, 1.0) for line in output.splitlines()]
    return [(e.stage, e.packages) for e in seen if e], watcher.installed


def test_pip_output_moves_the_build_from_resolving_to_installing() -> None:
    """Each ``Collecting`` counts a package found; ``Installing collected`` says how many."""
    assert feed(PIP_OUTPUT) == ([("resolving", 1), ("resolving", 2), ("installing", 2)], 2)


def test_uv_output_says_how_many_it_installs() -> None:
    """uv resolves at once: ``Resolved N packages`` moves the build to installing N."""
    assert feed(UV_OUTPUT) == ([("installing", 3)], 3)


def test_the_progress_file_is_read_from_where_the_reader_left_off(tmp_path: Path) -> None:
    """A poller gets each event once; a line being written waits for its newline."""
    file = ProgressFile(tmp_path / "d.progress")
    assert file.read() == ([], 0)
    file.start()
    for stage in ("creating", "resolving"):
        file.append(BuildEvent("d" * 32, stage))  # type: ignore[arg-type]
    events, seen = file.read()
    assert ([e.stage for e in events], seen) == (["creating", "resolving"], 2)
    with file.path.open("a") as f:
        f.write('{"digest": "dd", "stage": "inst')
    assert file.read(seen) == ([], 2)
    file.start()
    assert file.read() == ([], 0)


def test_each_stage_reads_as_a_line_with_its_count_and_time() -> None:
    """The console's lines name the environment, the stage, the package count and the time."""
    base = BuildEvent("0123456789abcdef" * 2, "installing", 12.34, 5, 2, 2, "uv")
    assert describe(base) == "environment 0123456789ab: installing 5 packages (step 2 of 2), 12.3 s"
    ready = BuildEvent("0" * 32, "ready", 3.0, 1, installer="pip")
    assert (
        describe(ready) == "environment 000000000000: ready in 3.0 s (1 package installed with pip)"
    )
    failed = BuildEvent("0" * 32, "failed", 1.0, detail="pip failed (exit 1):\nERROR: no")
    assert describe(failed).endswith("failed after 1.0 s: pip failed (exit 1):")


def test_the_bar_fills_as_the_stages_go() -> None:
    """The bar never goes back between stages and is full once the build is over."""
    order = ["waiting", "creating", "resolving", "installing", "checking", "ready"]
    fills = [fraction(BuildEvent("d" * 32, s, packages=3, step=1, steps=1)) for s in order]  # type: ignore[arg-type]
    assert fills == sorted(fills) and fills[-1] == 1.0
    drawn = bar(BuildEvent("d" * 32, "installing", 1.0, 3, 1, 1, "pip"), 7.0)
    assert drawn.startswith("[" + "#" * 17 + "." * 7 + "]") and drawn.endswith("7.0 s")


def test_off_a_terminal_the_console_writes_a_line_per_stage() -> None:
    """Not a terminal: one line each time the stage changes, none for a package found."""
    out = io.StringIO()
    console = ConsoleProgress(out, tty=False)
    for stage, packages in [("creating", 0), ("resolving", 1), ("resolving", 2), ("ready", 2)]:
        console(BuildEvent("d" * 32, stage, 0.5, packages, 1, 1, "uv"))  # type: ignore[arg-type]
    console.close()
    assert out.getvalue().splitlines() == [
        "yurt: environment dddddddddddd: creating the virtualenv (uv)",
        "yurt: environment dddddddddddd: resolving, 1 package found, 0.5 s",
        "yurt: environment dddddddddddd: ready in 0.5 s (2 packages installed with uv)",
    ]


def test_on_a_terminal_the_console_redraws_one_line_and_ends_it() -> None:
    """A terminal: the bar is redrawn in place (carriage return) and ends with a newline."""
    out = io.StringIO()
    console = ConsoleProgress(out, tty=True)
    console(BuildEvent("d" * 32, "resolving", step=1, steps=1))
    console(BuildEvent("d" * 32, "ready", 1.0, 1, installer="pip"))
    console.close()
    text = out.getvalue()
    assert text.count("\r\033[K") == 2 and text.endswith("(1 package installed with pip)\n")
    assert "[" in text.split("\r")[1]
