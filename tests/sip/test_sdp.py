from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.sip.sdp import (
    PCMA,
    PCMU,
    Codec,
    Direction,
    NoCommonCodec,
    SdpError,
    SdpSession,
    parse_sdp,
)

# Shaped like the offer sipp's uac_pcmu_play.xml sends.
SIPP_OFFER = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
)

# Shaped like a carrier offer: several codecs, dynamic telephone-event, extra lines.
CARRIER_OFFER = (
    "v=0\n"
    "o=- 1700000000 1700000000 IN IP4 203.0.113.9\n"
    "s=SBC call\n"
    "c=IN IP4 203.0.113.9\n"
    "b=AS:84\n"
    "t=0 0\n"
    "a=sendrecv\n"
    "m=audio 31000 RTP/AVP 18 8 0 96 13\n"
    "b=TIAS:64000\n"
    "a=rtpmap:18 G729/8000\n"
    "a=fmtp:18 annexb=no\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:96 telephone-event/8000\n"
    "a=fmtp:96 0-16\n"
    "a=rtpmap:13 CN/8000\n"
    "a=ptime:20\n"
    "a=maxptime:40\n"
    "a=rtcp:31005\n"
)


def session(port: int = 20000) -> SdpSession:
    return SdpSession("192.0.2.10", port, rng=random.Random(5))


# --- parsing ----------------------------------------------------------------


def test_parse_sipp_offer() -> None:
    sdp = parse_sdp(SIPP_OFFER.encode())
    assert sdp.origin.username == "user1"
    assert sdp.origin.session_id == 53655765
    assert sdp.origin.session_version == 2353687637
    assert sdp.connection is not None and sdp.connection.host == "127.0.0.1"
    (m,) = sdp.media
    assert (m.media, m.port, m.proto, m.payload_types) == ("audio", 6000, "RTP/AVP", [0, 101])
    maps = m.rtpmaps()
    assert maps[0].encoding == "PCMU" and maps[101].encoding == "telephone-event"
    assert m.fmtp(101) == "0-15"
    assert sdp.media_direction(m) is Direction.SENDRECV
    assert m.ptime is None and m.rtcp is None


def test_parse_carrier_offer_lf_and_session_attributes() -> None:
    sdp = parse_sdp(CARRIER_OFFER)
    m = sdp.media[0]
    assert sdp.bandwidths == ["AS:84"] and m.bandwidths == ["TIAS:64000"]
    assert m.ptime == 20 and m.rtcp == (31005, None)
    assert m.fmtp(18) == "annexb=no"
    assert m.attribute("maxptime") == "40"
    assert sdp.media_direction(m) is Direction.SENDRECV


def test_static_payload_without_rtpmap() -> None:
    sdp = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 8 0\r\n"
    )
    maps = sdp.media[0].rtpmaps()
    assert maps[8].encoding == "PCMA" and maps[0].encoding == "PCMU"


def test_serialize_roundtrip() -> None:
    for text in (SIPP_OFFER, CARRIER_OFFER):
        sdp = parse_sdp(text)
        wire = sdp.serialize()
        assert wire.endswith("\r\n")
        again = parse_sdp(wire)
        assert again == sdp
        assert again.serialize() == wire


def test_serialize_order_follows_rfc() -> None:
    sdp = parse_sdp(CARRIER_OFFER)
    kinds = [line[0] for line in sdp.serialize().split("\r\n") if line]
    assert kinds[:6] == ["v", "o", "s", "c", "b", "t"]
    assert kinds.index("m") > kinds.index("a")


@pytest.mark.parametrize(
    "body",
    [
        "",
        "o=- 1 1 IN IP4 h\r\n",  # no v=
        "v=1\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n",  # wrong version
        "v=0\r\ns=-\r\nt=0 0\r\n",  # no o=
        "v=0\r\no=- 1 1 IN IP4 h\r\nt=0 0\r\n",  # no s=
        "v=0\r\no=- x 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n",  # non-numeric session id
        "v=0\r\no=- 1 1 IN IP4\r\ns=-\r\nt=0 0\r\n",  # short o=
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP5 1.2.3.4\r\nt=0 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP x\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 200\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=a b\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nnot a line\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nA=x\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nv=0\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\na=\r\n",
    ],
)
def test_parse_rejects(body: str) -> None:
    with pytest.raises(SdpError):
        parse_sdp(body)


def test_parse_rejects_oversize_and_bad_utf8() -> None:
    with pytest.raises(SdpError, match="too large"):
        parse_sdp(b"v=0\r\n" + b"a=x\r\n" * 20000)
    with pytest.raises(SdpError, match="UTF-8"):
        parse_sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=\xff\r\n")


@pytest.mark.parametrize(
    "attr", ["a=rtpmap:x PCMU/8000", "a=rtpmap:0 PCMU", "a=ptime:abc", "a=rtcp:x"]
)
def test_bad_attributes_raise_sdp_error_on_use(attr: str) -> None:
    sdp = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP 0\r\n{attr}\r\n"
    )
    with pytest.raises(SdpError):
        session().answer(sdp)


# --- answering ----------------------------------------------------------------


def test_answer_sipp_offer() -> None:
    ours = session()
    answer, params = ours.answer(parse_sdp(SIPP_OFFER))
    assert params.codec == PCMU
    assert params.telephone_event_pt == 101
    assert params.direction is Direction.SENDRECV
    assert params.remote_rtp == ("127.0.0.1", 6000)
    assert params.remote_rtcp == ("127.0.0.1", 6001)
    m = answer.media[0]
    assert m.port == 20000 and m.payload_types == [0, 101]
    assert m.fmtp(101) == "0-15"
    assert m.ptime == 20
    assert m.direction is Direction.SENDRECV
    assert answer.connection is not None and answer.connection.host == "192.0.2.10"
    # It survives the wire.
    assert parse_sdp(answer.to_bytes()) == answer


def test_answer_prefers_offerer_order_and_echoes_dynamic_dtmf_pt() -> None:
    answer, params = session().answer(parse_sdp(CARRIER_OFFER))
    assert params.codec == PCMA  # first one in the offer that we support (G729 is not)
    assert params.telephone_event_pt == 96
    assert params.remote_rtcp == ("203.0.113.9", 31005)
    assert params.remote_ptime == 20
    m = answer.media[0]
    assert m.payload_types == [8, 96]
    assert m.fmtp(96) == "0-15"  # the intersection with what we handle
    assert "a=rtpmap:96 telephone-event/8000" in answer.serialize()


def test_answer_our_codec_preference_list_is_a_filter() -> None:
    ours = SdpSession("192.0.2.10", 20000, codecs=(PCMU,), rng=random.Random(1))
    _, params = ours.answer(parse_sdp(CARRIER_OFFER))
    assert params.codec == PCMU


def test_answer_dynamic_pt_for_static_codec() -> None:
    offer = SIPP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 97 101").replace(
        "rtpmap:0 PCMU", "rtpmap:97 pcmu"
    )
    _, params = session().answer(parse_sdp(offer))
    assert params.codec == Codec("PCMU", 97)


def test_answer_without_telephone_event() -> None:
    offer = (
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    answer, params = session().answer(parse_sdp(offer))
    assert params.telephone_event_pt is None
    assert answer.media[0].payload_types == [0]
    assert "telephone-event" not in answer.serialize()


def test_telephone_event_without_fmtp_means_0_to_15() -> None:
    offer = SIPP_OFFER.replace("a=fmtp:101 0-15\r\n", "")
    _, params = session().answer(parse_sdp(offer))
    assert params.telephone_event_pt == 101


def test_telephone_event_with_no_shared_events_is_dropped() -> None:
    offer = SIPP_OFFER.replace("a=fmtp:101 0-15", "a=fmtp:101 16")
    _, params = session().answer(parse_sdp(offer))
    assert params.telephone_event_pt is None


def test_no_common_codec() -> None:
    offer = CARRIER_OFFER.replace("RTP/AVP 18 8 0 96 13", "RTP/AVP 18 96 13")
    with pytest.raises(NoCommonCodec):
        session().answer(parse_sdp(offer))


def test_no_audio_stream_or_srtp_only() -> None:
    video = SIPP_OFFER.replace("m=audio 6000 RTP/AVP 0 101", "m=video 6000 RTP/AVP 0 101")
    with pytest.raises(NoCommonCodec):
        session().answer(parse_sdp(video))
    srtp = SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP")
    with pytest.raises(NoCommonCodec):
        session().answer(parse_sdp(srtp))


def test_extra_streams_are_rejected_with_port_zero() -> None:
    offer = SIPP_OFFER + "m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    offer += "m=audio 6004 RTP/AVP 0\r\n"
    answer, params = session().answer(parse_sdp(offer))
    assert [(m.media, m.port) for m in answer.media] == [
        ("audio", 20000),
        ("video", 0),
        ("audio", 0),
    ]
    assert params.remote_rtp == ("127.0.0.1", 6000)


def test_first_audio_stream_unusable_second_taken() -> None:
    offer = SIPP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18").replace(
        "a=rtpmap:0 PCMU/8000\r\n", ""
    )
    offer += "m=audio 6010 RTP/AVP 8\r\n"
    answer, params = session().answer(parse_sdp(offer))
    assert [m.port for m in answer.media] == [0, 20000]
    assert params.codec == PCMA and params.remote_rtp == ("127.0.0.1", 6010)


def test_media_level_connection_overrides_session() -> None:
    offer = SIPP_OFFER.replace("a=rtpmap:0", "c=IN IP4 198.51.100.7\r\na=rtpmap:0")
    _, params = session().answer(parse_sdp(offer))
    assert params.remote_rtp == ("198.51.100.7", 6000)


def test_missing_connection_is_an_error() -> None:
    offer = SIPP_OFFER.replace("c=IN IP4 127.0.0.1\r\n", "")
    with pytest.raises(SdpError):
        session().answer(parse_sdp(offer))


@pytest.mark.parametrize(
    ("offered", "wanted", "answered"),
    [
        ("sendrecv", Direction.SENDRECV, Direction.SENDRECV),
        ("sendonly", Direction.SENDRECV, Direction.RECVONLY),
        ("recvonly", Direction.SENDRECV, Direction.SENDONLY),
        ("inactive", Direction.SENDRECV, Direction.INACTIVE),
        ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),
        ("sendonly", Direction.SENDONLY, Direction.INACTIVE),
        ("recvonly", Direction.RECVONLY, Direction.INACTIVE),
    ],
)
def test_direction_negotiation(offered: str, wanted: Direction, answered: Direction) -> None:
    offer = SIPP_OFFER + f"a={offered}\r\n"
    answer, params = session().answer(parse_sdp(offer), wanted)
    assert answer.media[0].direction is answered
    assert params.direction is answered


def test_session_level_direction_applies() -> None:
    offer = SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    _, params = session().answer(parse_sdp(offer))
    assert params.direction is Direction.RECVONLY and params.on_hold


def test_old_style_hold_with_zero_address() -> None:
    offer = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
    answer, params = session().answer(parse_sdp(offer))
    assert params.remote_rtp is None and params.on_hold
    assert params.direction is Direction.RECVONLY
    assert answer.media[0].port == 20000


def test_reinvite_hold_and_unhold_bump_version_only_on_change() -> None:
    ours = session()
    a1, _ = ours.answer(parse_sdp(SIPP_OFFER))
    v1 = a1.origin.session_version
    # Same offer again (session refresh): unchanged answer, same version.
    a2, _ = ours.answer(parse_sdp(SIPP_OFFER))
    assert a2.origin.session_version == v1
    assert a2.origin.session_id == a1.origin.session_id
    # Hold: answer changes to recvonly, version goes up by one.
    a3, p3 = ours.answer(parse_sdp(SIPP_OFFER + "a=sendonly\r\n"))
    assert a3.origin.session_version == v1 + 1 and p3.on_hold
    # Unhold.
    a4, p4 = ours.answer(parse_sdp(SIPP_OFFER))
    assert a4.origin.session_version == v1 + 2 and not p4.on_hold


# --- offering -------------------------------------------------------------------


def test_create_offer_and_process_answer() -> None:
    ours = session(20002)
    offer = ours.create_offer()
    m = offer.media[0]
    assert m.payload_types == [0, 8, 101]
    assert m.fmtp(101) == "0-15" and m.ptime == 20 and m.direction is Direction.SENDRECV
    assert parse_sdp(offer.to_bytes()) == offer
    # The peer answers with PCMA and its own view of telephone-event.
    peer = SdpSession("198.51.100.1", 7078, codecs=(PCMA,), rng=random.Random(2))
    answer, peer_params = peer.answer(parse_sdp(offer.to_bytes()))
    assert peer_params.codec == PCMA and peer_params.remote_rtp == ("192.0.2.10", 20002)
    params = ours.process_answer(parse_sdp(answer.to_bytes()))
    assert params.codec == PCMA
    assert params.telephone_event_pt == 101
    assert params.remote_rtp == ("198.51.100.1", 7078)
    assert params.direction is Direction.SENDRECV


def test_offer_hold_and_reoffer_versions() -> None:
    ours = session()
    o1 = ours.create_offer()
    o2 = ours.create_offer(Direction.SENDONLY)
    assert o2.media[0].direction is Direction.SENDONLY
    assert o2.origin.session_version == o1.origin.session_version + 1
    answer = parse_sdp(
        "v=0\r\no=- 9 9 IN IP4 p\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
        "m=audio 7078 RTP/AVP 0\r\na=recvonly\r\n"
    )
    params = ours.process_answer(answer)
    assert params.direction is Direction.SENDONLY


def test_process_answer_errors() -> None:
    ours = session()
    answer = parse_sdp(SIPP_OFFER)
    with pytest.raises(SdpError):
        ours.process_answer(answer)  # no offer outstanding
    ours.create_offer()
    with pytest.raises(NoCommonCodec):
        ours.process_answer(parse_sdp(SIPP_OFFER.replace("m=audio 6000", "m=audio 0")))
    with pytest.raises(NoCommonCodec):
        ours.process_answer(
            parse_sdp(
                SIPP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18 101").replace("0 PCMU", "18 G729")
            )
        )
    with pytest.raises(SdpError):
        ours.process_answer(parse_sdp(SIPP_OFFER + "m=video 0 RTP/AVP 96\r\n"))


def test_ipv6_offer_and_answer() -> None:
    offer = SIPP_OFFER.replace("IN IP4 127.0.0.1", "IN IP6 ::1")
    ours = SdpSession("2001:db8::5", 20000, rng=random.Random(3))
    answer, params = ours.answer(parse_sdp(offer))
    assert params.remote_rtp == ("::1", 6000)
    assert "c=IN IP6 2001:db8::5" in answer.serialize()


# --- robustness -------------------------------------------------------------------

_sdp_line = st.one_of(
    st.sampled_from(SIPP_OFFER.split("\r\n") + CARRIER_OFFER.split("\n")),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(list("vosctmabikz")),
        st.text(alphabet="0123456789 abcIPN./:-", max_size=30),
    ),
)


@given(st.lists(_sdp_line, max_size=25))
def test_parse_and_answer_only_raise_sdp_error(lines: list[str]) -> None:
    body = "\r\n".join(["v=0", *lines])
    try:
        sdp = parse_sdp(body)
        parse_sdp(sdp.serialize())
        session().answer(sdp)
    except SdpError:
        pass


@given(st.binary(max_size=300))
def test_parse_bytes_only_raises_sdp_error(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(data)
