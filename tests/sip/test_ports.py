from __future__ import annotations

import pytest

from voxgate.sip.ports import PortRangeError, PortsExhausted, RtpPortAllocator, parse_port_range


def test_parse_port_range() -> None:
    assert parse_port_range("20000-20999") == (20000, 20999)
    assert parse_port_range(" 30000 - 30010 ") == (30000, 30010)
    for bad in ["", "20000", "a-b", "20999-20000", "80-90", "60000-70000", "1-2-3"]:
        with pytest.raises(PortRangeError):
            parse_port_range(bad)


def test_even_ports_with_room_for_rtcp() -> None:
    alloc = RtpPortAllocator.from_range("20001-20010")
    ports = [alloc.allocate() for _ in range(alloc.capacity)]
    assert ports == [20002, 20004, 20006, 20008]  # 20010 has no 20011
    assert all(p % 2 == 0 and p + 1 <= 20010 for p in ports)
    assert alloc.in_use == 4


def test_default_range_capacity() -> None:
    assert RtpPortAllocator.from_range("20000-20999").capacity == 500


def test_exhaustion_and_release() -> None:
    alloc = RtpPortAllocator(40000, 40005)
    a, b, c = alloc.allocate(), alloc.allocate(), alloc.allocate()
    assert {a, b, c} == {40000, 40002, 40004}
    with pytest.raises(PortsExhausted):
        alloc.allocate()
    alloc.release(b)
    assert alloc.allocate() == b
    with pytest.raises(ValueError):
        alloc.release(40001)
    alloc.release(a)
    with pytest.raises(ValueError):
        alloc.release(a)


def test_round_robin_delays_reuse() -> None:
    alloc = RtpPortAllocator(40000, 40009)
    first = alloc.allocate()
    alloc.release(first)
    # The freed pair comes back only after every other pair had its turn.
    assert [alloc.allocate() for _ in range(5)] == [40002, 40004, 40006, 40008, 40000]
    with pytest.raises(PortsExhausted):
        alloc.allocate()


def test_no_pair_in_range() -> None:
    with pytest.raises(PortRangeError):
        RtpPortAllocator(40001, 40001)
    with pytest.raises(PortRangeError):
        RtpPortAllocator(40001, 40002)
