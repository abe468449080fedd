"""Tests for the realtime wire format: msgpack frames, control messages, client-side reading."""

from __future__ import annotations

import json

import msgpack
import pytest
from pydantic import BaseModel

from yurt.client.realtime import (
    RealtimeError,
    handshake_headers,
    incoming,
    outgoing,
    realtime_url,
)
from yurt.realtime_frames import (
    FrameError,
    encode,
    error_message,
    parse_max_buffering,
    to_input,
    to_output,
)


class Pic(BaseModel):
    """A model with a bytes field."""

    name: str
    data: bytes


def test_models_travel_as_msgpack_maps_with_bin() -> None:
    """An output model becomes a msgpack map whose bytes are bin, as fal's .dict() + packb."""
    frame = to_output(Pic(name="a", data=b"\x00\xff"))
    assert msgpack.unpackb(frame, raw=False) == {"name": "a", "data": b"\x00\xff"}
    assert to_input(frame, Pic) == Pic(name="a", data=b"\x00\xff")


def test_bad_inputs_say_what_is_wrong_without_echoing() -> None:
    """Not msgpack, not a map, or an invalid field: FrameError naming the field only."""
    with pytest.raises(FrameError, match="not valid msgpack"):
        to_input(b"\xc1", Pic)
    with pytest.raises(FrameError, match="holds a list"):
        to_input(encode([1]), Pic)
    with pytest.raises(FrameError, match="data: Field required") as info:
        to_input(encode({"name": "secret-value"}), Pic)
    assert "secret-value" not in str(info.value)


def test_outputs_must_be_models_or_dicts() -> None:
    """An endpoint returning a list is a TypeError naming the type."""
    with pytest.raises(TypeError, match="not a list"):
        to_output([1, 2])


@pytest.mark.parametrize(("raw", "value"), [(None, None), ("", None), ("1", 1), ("60", 60)])
def test_max_buffering_accepts_fal_clients_range(raw: str | None, value: int | None) -> None:
    """max_buffering is 1..60, as fal-client and fal-js bound it; absent means the app's."""
    assert parse_max_buffering(raw) == value


@pytest.mark.parametrize("raw", ["0", "61", "two", "-1"])
def test_max_buffering_outside_the_range_is_refused(raw: str) -> None:
    """Anything else is a ValueError naming the bounds."""
    with pytest.raises(ValueError, match="from 1 to 60"):
        parse_max_buffering(raw)


def test_client_reads_outputs_errors_and_information() -> None:
    """Binary frames are outputs, x-fal-message is skipped, x-fal-error raises its code."""
    assert incoming(encode({"a": 1}), None) == {"a": 1}
    assert incoming(json.dumps({"type": "x-fal-message", "action": "timings"}), None) is None
    assert incoming("plain", None) == {"type": "text", "payload": "plain"}
    with pytest.raises(RealtimeError) as info:
        incoming(error_message("TIMEOUT", "no inputs"), None)
    assert (info.value.error, info.value.reason) == ("TIMEOUT", "no inputs")


def test_client_writes_models_and_dicts() -> None:
    """send takes a model or a mapping; anything else is a TypeError."""
    assert msgpack.unpackb(outgoing(Pic(name="x", data=b"1"), None)) == {"name": "x", "data": b"1"}
    assert msgpack.unpackb(outgoing({"k": "v"}, None)) == {"k": "v"}
    with pytest.raises(TypeError, match="not a list"):
        outgoing([1], None)  # type: ignore[arg-type]


def test_realtime_urls_follow_fal_clients_shape() -> None:
    """ws(s)://host/owner/app[/sub]/realtime?max_buffering=N, as fal-client builds it."""
    assert realtime_url("http://h:1", "me/app") == "ws://h:1/me/app/realtime"
    assert realtime_url("https://h", "me/app", "/ws", 2) == "wss://h/me/app/ws?max_buffering=2"
    with pytest.raises(ValueError, match="from 1 to 60"):
        realtime_url("http://h", "me/app", max_buffering=0)


def test_handshake_headers_drop_accept_and_split_the_agent() -> None:
    """The key goes along; accept is dropped; the user agent is handed over apart."""
    headers, agent = handshake_headers(
        {"authorization": "Key k", "accept": "application/json", "user-agent": "yurt/1"}
    )
    assert (headers, agent) == ({"authorization": "Key k"}, "yurt/1")
