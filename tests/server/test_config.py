"""``--ice-servers`` / ``VOXGATE_ICE_SERVERS``: STUN and TURN URLs for browser calls."""

from __future__ import annotations

import pytest

from voxgate.server.config import ConfigError, IceServer, config_from, parse_ice_servers


def test_stun_and_turn_with_percent_encoded_credentials() -> None:
    servers = parse_ice_servers(
        "stun:stun.example.com:3478, turn:al%40ice:p%3Aw%2Cx@turn.example.com?transport=tcp,"
        "turns:u:p@turn.example.com:5349"
    )
    assert servers == (
        IceServer(url="stun:stun.example.com:3478"),
        IceServer(url="turn:turn.example.com?transport=tcp", username="al@ice", credential="p:w,x"),
        IceServer(url="turns:turn.example.com:5349", username="u", credential="p"),
    )


@pytest.mark.parametrize(
    "text",
    [
        "stun.example.com",  # no scheme
        "http://stun.example.com",
        "turn:turn.example.com",  # TURN needs credentials
        "stun:u:p@stun.example.com",  # STUN takes none
        "stun:stun.example.com?transport=udp",
        "turns:u:p@turn.example.com?transport=udp",
        "turn:u:p@turn.example.com:99999",
        "turn::p@turn.example.com",  # empty user
    ],
)
def test_bad_urls_are_refused_with_the_flag_named(text: str) -> None:
    with pytest.raises(ConfigError, match="--ice-servers"):
        parse_ice_servers(text)


def test_flag_and_environment() -> None:
    assert config_from({}, {}).ice_servers == ()
    env = {"VOXGATE_ICE_SERVERS": "stun:a.example.com"}
    assert config_from({}, env).ice_servers == (IceServer(url="stun:a.example.com"),)
    flags: dict[str, str | None] = {"ice_servers": "stun:b.example.com:19302"}
    assert config_from(flags, env).ice_servers == (IceServer(url="stun:b.example.com:19302"),)
    assert config_from({"ice_servers": " , "}, {}).ice_servers == ()
