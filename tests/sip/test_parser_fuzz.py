"""Property tests: the parser either returns a message or raises SipParseError.

Inputs are random bytes and mutations (flips, insertions, deletions,
truncations, splices) of every RFC 4475 message and a clean INVITE.  Whatever
parses must also print and re-parse, and the stream framer must be
insensitive to how the bytes are chunked.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxgate.sip.errors import SipParseError
from voxgate.sip.message import SipLimits, SipRequest, SipResponse, StreamFramer, parse
from voxgate.sip.transaction import TransactionLayer, Transport, TxState

RFC4475 = Path(__file__).resolve().parents[2] / "tests" / "data" / "sip" / "rfc4475"
CORPUS = [p.read_bytes() for p in sorted(RFC4475.glob("*.dat"))] + [
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKabc;rport\r\n"
    b'From: "A \\"q\\"" <sip:a@example.com>;tag=1\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: x@y\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    b"Contact: <sip:a@192.0.2.1:5060;transport=udp>, sip:b@c.example;q=0.1\r\n"
    b"Content-Length: 3\r\n\r\nabc"
]
# A few bytes that matter to the grammar, so mutations hit interesting paths.
SPECIALS = b' \t\r\n:;,=<>"\\%@[]/?&0123456789zZ\x00\xff'

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes) -> None:
    try:
        msg = parse(data)
    except SipParseError as exc:
        assert isinstance(exc.reason, str) and exc.reason.isascii()
        assert "\n" not in exc.reason and exc.status in (400, 505, 513)
        return
    assert isinstance(msg, SipRequest | SipResponse)
    again = parse(msg.serialize())
    assert type(again) is type(msg)
    assert again.body == msg.body
    assert again.cseq == msg.cseq
    assert again.call_id == msg.call_id


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.integers(0, 4))
        if action == 0:
            data[pos] = draw(st.sampled_from(list(SPECIALS)))
        elif action == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif action == 2:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif action == 3:
            del data[pos:]
        else:
            other = draw(st.sampled_from(CORPUS))
            start = draw(st.integers(0, len(other) - 1))
            data[pos:pos] = other[start : start + draw(st.integers(1, 64))]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash(data: bytes) -> None:
    check(data)


@FUZZ
@given(mutated())
def test_mutated_messages_never_crash(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.lists(st.sampled_from([*CORPUS[-1:], StreamFramer.PING]), max_size=4), st.data())
def test_stream_framer_is_chunking_independent(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    framer = StreamFramer(SipLimits())
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        size = data.draw(st.integers(1, 97))
        out += framer.feed(stream[pos : pos + size])
        pos += size
    assert out == frames
    assert framer.buffered == 0


@FUZZ
@given(st.lists(mutated(), max_size=3))
def test_stream_framer_never_crashes(chunks: list[bytes]) -> None:
    framer = StreamFramer(SipLimits(max_message_bytes=8192))
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                if frame != StreamFramer.PING:
                    check(frame)
    except SipParseError:
        pass


@FUZZ
@given(st.lists(st.tuples(mutated(), st.floats(0, 40)), max_size=12))
def test_transaction_layer_survives_any_input(inputs: list[tuple[bytes, float]]) -> None:
    layer = TransactionLayer()
    now = 0.0
    for data, step in inputs:
        now += step
        layer.receive(data, ("192.0.2.5", 5060), Transport.UDP, now)
        layer.handle_timer(now)
        for out in layer.take_outgoing():
            assert out.destination[0] != "255.255.255.255"
        layer.take_events()
    layer.handle_timer(now + 1000.0)
    # Only server transactions still waiting for the TU's answer may remain.
    assert all(
        not tx.is_client and tx.state in (TxState.TRYING, TxState.PROCEEDING)
        for tx in layer.transactions
    )
