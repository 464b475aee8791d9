"""RTP/RTCP port pairs from the ``--rtp-ports`` range: RTP on an even port,
RTCP on the next odd one (RFC 3550 §11)."""

from __future__ import annotations

__all__ = ["PortRangeError", "PortsExhausted", "RtpPortAllocator", "parse_port_range"]


class PortRangeError(ValueError):
    """A ``--rtp-ports`` value is malformed or holds no even/odd pair."""


class PortsExhausted(RuntimeError):
    """Every port pair of the range is in use (answer new calls 503)."""


def parse_port_range(text: str) -> tuple[int, int]:
    """``"20000-20999"`` -> ``(20000, 20999)``."""
    lo, sep, hi = text.strip().partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise PortRangeError(f"port range must look like 20000-20999, got {text!r}")
    low, high = int(lo), int(hi)
    if not 1024 <= low < high <= 65535:
        raise PortRangeError(f"port range {text!r} must be within 1024-65535, low < high")
    return low, high


class RtpPortAllocator:
    """Hands out even RTP ports (RTCP = port + 1) round-robin.

    Round-robin rather than lowest-free so a port is reused as late as
    possible: stray packets of an ended call then hit no live call.
    """

    def __init__(self, low: int, high: int) -> None:
        first = low + (low % 2)
        if first + 1 > high:
            raise PortRangeError(f"range {low}-{high} holds no even/odd port pair")
        self._ports = list(range(first, high, 2))  # p + 1 <= high for each p
        self._in_use: set[int] = set()
        self._next = 0

    @classmethod
    def from_range(cls, text: str) -> RtpPortAllocator:
        return cls(*parse_port_range(text))

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> int:
        """An even RTP port; raises :class:`PortsExhausted` when none is free.
        If binding it fails (taken by another process), release it and call
        again: the round-robin moves on to the next pair."""
        n = len(self._ports)
        for i in range(n):
            port = self._ports[(self._next + i) % n]
            if port not in self._in_use:
                self._next = (self._next + i + 1) % n
                self._in_use.add(port)
                return port
        raise PortsExhausted(f"all {n} RTP port pairs are in use")

    def release(self, port: int) -> None:
        """Return a port pair; releasing a port that is not allocated is an error."""
        if port not in self._in_use:
            raise ValueError(f"RTP port {port} is not allocated")
        self._in_use.remove(port)
