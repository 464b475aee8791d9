"""Coverage-guided fuzz target for the SIP parser and stream framer (atheris).

Not collected by pytest.  Run with::

    pip install atheris
    python tests/fuzz/fuzz_sip_parser.py -max_len=4096 -runs=1000000 \
        tests/data/sip/rfc4475/

(passing the RFC 4475 directory seeds the corpus).  The only acceptable
outcome for any input is a parsed message or ``SipParseError``; anything else
is reported by atheris as a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from voxgate.sip.errors import SipParseError
    from voxgate.sip.message import StreamFramer, parse


def test_one_input(data: bytes) -> None:
    try:
        msg = parse(data)
    except SipParseError:
        pass
    else:
        # Whatever parses must survive its own serialisation.
        parse(msg.serialize())
    framer = StreamFramer()
    try:
        # Feed in two uneven chunks so the buffering paths are exercised too.
        cut = len(data) // 3
        for frame in framer.feed(data[:cut]) + framer.feed(data[cut:]):
            if frame != StreamFramer.PING:
                with contextlib.suppress(SipParseError):
                    parse(frame)
    except SipParseError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
