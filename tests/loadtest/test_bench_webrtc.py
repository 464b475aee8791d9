"""The WebRTC bench's measures: RTP transit variation and histogram percentiles."""

from __future__ import annotations

import pytest

from loadtest.bench_webrtc import _Arrivals, _hist, _hist_pct


def test_transit_variation_is_arrival_spacing_against_rtp_time() -> None:
    arrivals = _Arrivals()
    arrivals.clock = 8000
    # 20 ms of audio each; the third packet is 5 ms late, the fourth on time again.
    for at, stamp in ((1.000, 0), (1.020, 160), (1.045, 320), (1.060, 480)):
        arrivals.times.append(at)
        arrivals.stamps.append(stamp)
    assert arrivals.transit_deltas_ms(0.0, 2.0) == pytest.approx([0.0, 5.0, 5.0])
    assert arrivals.transit_deltas_ms(1.01, 2.0) == pytest.approx([5.0, 5.0])


def test_rtp_timestamps_wrap() -> None:
    arrivals = _Arrivals()
    arrivals.clock = 8000
    arrivals.times += [0.0, 0.02]
    arrivals.stamps += [(1 << 32) - 80, 80]
    assert arrivals.transit_deltas_ms(0.0, 1.0) == pytest.approx([0.0])


def test_histogram_percentiles_in_tenths_of_a_millisecond() -> None:
    hist = _hist([0.04, 0.5, 1.0, 2.0, 250.0])
    assert _hist_pct(hist, 0.5) == pytest.approx(1.0)
    assert _hist_pct(hist, 1.0) == pytest.approx(200.0)  # overflow bin
    assert _hist_pct(_hist([]), 0.99) is None
