"""G.711 tables against CPython's audioop (ITU reference) over every input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from voxgate.media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_PCM = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
ALL_BYTES = bytes(range(256))


def test_ulaw_encode_bit_exact_for_every_sample() -> None:
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM.tobytes(), 2)


def test_alaw_encode_bit_exact_for_every_sample() -> None:
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM.tobytes(), 2)


def test_ulaw_decode_bit_exact_for_every_code() -> None:
    assert g711.ulaw_decode(ALL_BYTES).tobytes() == audioop.ulaw2lin(ALL_BYTES, 2)


def test_alaw_decode_bit_exact_for_every_code() -> None:
    assert g711.alaw_decode(ALL_BYTES).tobytes() == audioop.alaw2lin(ALL_BYTES, 2)


def test_known_reference_points() -> None:
    # µ-law 0xFF and A-law 0xD5 are the zero codes of the standard.
    assert g711.ulaw_encode(np.zeros(1, np.int16)) == b"\xff"
    assert g711.alaw_encode(np.zeros(1, np.int16)) == b"\xd5"
    assert g711.ulaw_decode(b"\x00")[0] == -32124
    assert g711.alaw_decode(b"\xaa")[0] == 32256


def test_decode_encode_is_identity_on_codes() -> None:
    # Every µ-law code survives decode -> encode except the two zeros (0x7F
    # and 0xFF both decode to 0 and 0 encodes to 0xFF).
    round_trip = g711.ulaw_encode(g711.ulaw_decode(ALL_BYTES))
    diffs = [i for i in range(256) if round_trip[i] != i]
    assert diffs == [0x7F]
    assert g711.alaw_encode(g711.alaw_decode(ALL_BYTES)) == ALL_BYTES


def test_transcoding_matches_decode_then_encode() -> None:
    assert g711.ulaw_to_alaw(ALL_BYTES) == audioop.lin2alaw(audioop.ulaw2lin(ALL_BYTES, 2), 2)
    assert g711.alaw_to_ulaw(ALL_BYTES) == audioop.lin2ulaw(audioop.alaw2lin(ALL_BYTES, 2), 2)


def test_random_buffers_match_audioop() -> None:
    rng = np.random.default_rng(7)
    for size in (0, 1, 159, 160, 161, 4000):
        pcm = rng.integers(-32768, 32768, size=size).astype(np.int16)
        assert g711.ulaw_encode(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)
        assert g711.alaw_encode(pcm) == audioop.lin2alaw(pcm.tobytes(), 2)


def test_encode_rejects_wrong_dtype() -> None:
    with pytest.raises(TypeError):
        g711.ulaw_encode(np.zeros(160, dtype=np.float32))
    with pytest.raises(TypeError):
        g711.alaw_encode(np.zeros(160, dtype=np.int32))


def test_decoded_buffers_are_independent_copies() -> None:
    # Callers may mutate decoded audio (gain, mixing); that must never touch
    # the shared tables.
    first = g711.ulaw_decode(b"\x00\x00")
    first[:] = 0
    assert g711.ulaw_decode(b"\x00")[0] == -32124
