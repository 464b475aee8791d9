"""DTMF key presses: the event every transport reports, and an in-band detector.

Transports report digits they are told about (RFC 4733 telephone-event over
RTP, Twilio ``dtmf`` messages, SIP INFO, a WebRTC data channel). Some trunks only pass the tones in
the audio; ``GoertzelDtmfDetector`` finds those in 8 kHz PCM.
"""

from __future__ import annotations

import enum

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = ["DTMF_DIGITS", "DtmfError", "DtmfEvent", "DtmfSource", "GoertzelDtmfDetector"]

DTMF_DIGITS = frozenset("0123456789*#ABCD")

_ROWS = (697.0, 770.0, 852.0, 941.0)
_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")


class DtmfError(ValueError):
    """A digit outside 0-9 * # A-D, or bad detector input."""


class DtmfSource(enum.Enum):
    RFC4733 = "rfc4733"
    TWILIO = "twilio"
    INBAND = "inband"
    SIP_INFO = "sip_info"
    DATA_CHANNEL = "data_channel"  # a WebRTC data channel (browser keypad)


class DtmfEvent(msgspec.Struct, frozen=True):
    """One key press. ``duration`` in seconds (0.0 when the source does not say)."""

    digit: str
    duration: float
    source: DtmfSource

    def __post_init__(self) -> None:
        if self.digit not in DTMF_DIGITS or len(self.digit) != 1:
            raise DtmfError(f"not a DTMF digit: {self.digit!r}")
        if self.duration < 0:
            raise DtmfError("negative DTMF duration")


class GoertzelDtmfDetector:
    """Stream detector for in-band DTMF in 8 kHz PCM16.

    Analyses 205-sample windows (the classic size: bins fall close to all
    eight DTMF frequencies) every 102 samples, so a 40 ms tone — the shortest
    the standard requires to be accepted — spans at least two windows whatever
    its alignment. A digit is reported when its tone ends, after two
    consecutive windows agree, with its measured duration.
    """

    WINDOW = 205
    HOP = 102

    __slots__ = (
        "_basis",
        "_buffer",
        "_current",
        "_current_windows",
        "_min_rms",
        "_miss",
        "_rate",
    )

    def __init__(self, sample_rate: int = 8000, *, min_level_dbfs: float = -36.0) -> None:
        if sample_rate != 8000:
            raise DtmfError("the in-band detector runs on 8 kHz audio")
        self._rate = sample_rate
        n = np.arange(self.WINDOW)
        freqs = np.array(_ROWS + _COLS)
        # One DFT row per DTMF frequency: the Goertzel filter bank as a matmul.
        self._basis: npt.NDArray[np.complex128] = np.exp(
            -2j * np.pi * np.outer(n, freqs) / sample_rate
        )
        self._min_rms = 32768.0 * 10 ** (min_level_dbfs / 20)
        self._buffer = np.zeros(0, dtype=np.float64)
        self._current: str | None = None
        self._current_windows = 0
        self._miss = 0

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[DtmfEvent]:
        """Analyse the next chunk; returns digits whose tones ended in it."""
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            raise DtmfError("detector input must be a 1-D int16 array")
        buf = np.concatenate((self._buffer, pcm.astype(np.float64)))
        events: list[DtmfEvent] = []
        start = 0
        while start + self.WINDOW <= len(buf):
            self._step(self._classify(buf[start : start + self.WINDOW]), events)
            start += self.HOP
        self._buffer = buf[start:]
        return events

    def flush(self) -> list[DtmfEvent]:
        """End of audio: report a tone still sounding."""
        events: list[DtmfEvent] = []
        self._end_tone(events)
        self._buffer = np.zeros(0, dtype=np.float64)
        return events

    def _classify(self, window: npt.NDArray[np.float64]) -> str | None:
        energy = float(np.dot(window, window))
        if energy <= 0.0 or np.sqrt(energy / self.WINDOW) < self._min_rms:
            return None
        power = np.abs(window @ self._basis) ** 2
        # Fraction of the window's energy each tone holds (1.0 for a pure sine).
        share = 2.0 * power / (self.WINDOW * energy)
        rows, cols = share[:4], share[4:]
        r = int(np.argmax(rows))
        c = int(np.argmax(cols))
        row_share, col_share = float(rows[r]), float(cols[c])
        if row_share < 0.15 or col_share < 0.15:
            return None
        # Speech spreads energy; DTMF puts nearly all of it in two tones.
        if row_share + col_share < 0.6:
            return None
        # Twist: the two tones within ~8 dB of each other.
        if max(row_share, col_share) > 6.3 * min(row_share, col_share):
            return None
        # The runner-up in each group must be well below the winner.
        if np.sort(rows)[-2] > 0.25 * row_share or np.sort(cols)[-2] > 0.25 * col_share:
            return None
        return _KEYPAD[r][c]

    def _step(self, digit: str | None, events: list[DtmfEvent]) -> None:
        if digit is not None and digit == self._current:
            self._current_windows += 1
            self._miss = 0
            return
        if digit is None and self._current is not None and self._miss == 0:
            # Tolerate one dropped window inside a tone (noise burst, window
            # straddling the edge) before calling it ended.
            self._miss = 1
            return
        self._end_tone(events)
        if digit is not None:
            self._current = digit
            self._current_windows = 1

    def _end_tone(self, events: list[DtmfEvent]) -> None:
        if self._current is not None and self._current_windows >= 2:
            duration = (self._current_windows * self.HOP + self.WINDOW - self.HOP) / self._rate
            events.append(DtmfEvent(self._current, round(duration, 3), DtmfSource.INBAND))
        self._current = None
        self._current_windows = 0
        self._miss = 0
