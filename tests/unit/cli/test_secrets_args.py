"""``yurt secrets`` command lines and where a value comes from, apart from any server."""

from __future__ import annotations

import io

import pytest

from yurt.cli.main import build_parser
from yurt.cli.secrets import read_value, split_name


def test_set_takes_the_value_from_stdin_by_default() -> None:
    """Without VALUE (or with ``-``) the value is read from stdin; options are parsed."""
    args = build_parser().parse_args(["secrets", "set", "HF_TOKEN", "--server", "http://s"])
    assert (args.secrets_command, args.name, args.value, args.server) == (
        "set",
        "HF_TOKEN",
        "-",
        "http://s",
    )
    args = build_parser().parse_args(["secrets", "unset", "HF_TOKEN", "--token", "t", "--json"])
    assert (args.secrets_command, args.name, args.token, args.json) == (
        "unset",
        "HF_TOKEN",
        "t",
        True,
    )
    assert build_parser().parse_args(["secrets", "list"]).secrets_command == "list"


def test_secrets_wants_a_subcommand() -> None:
    """``yurt secrets`` alone is a usage error."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["secrets"])


@pytest.mark.parametrize(
    ("stdin", "value"),
    [("abc\n", "abc"), ("abc\r\n", "abc"), ("abc", "abc"), ("a\nb\n", "a\nb"), ("x\n\n", "x\n")],
)
def test_a_piped_value_loses_one_line_ending(stdin: str, value: str) -> None:
    """The line ending ``echo`` adds is dropped, and only that one."""
    assert read_value("-", "N", io.StringIO(stdin)) == value


def test_a_given_value_is_taken_as_is() -> None:
    """A VALUE on the command line is not read from stdin."""
    assert read_value("v\n", "N", io.StringIO("other")) == "v\n"


def test_fal_name_equals_value_is_understood() -> None:
    """``NAME=VALUE`` (as ``fal secrets set`` takes it) sets NAME, without reading stdin."""
    assert split_name("HF_TOKEN=a=b", "-", io.StringIO("other")) == ("HF_TOKEN", "a=b")
    assert split_name("HF_TOKEN", "-", io.StringIO("piped\n")) == ("HF_TOKEN", "piped")
