"""A speech worker stand-in that speaks the real frame protocol without models (tests only).

``python tests/server/fake_worker.py --fd N --max-calls M``. Behaviour knobs,
honoured only here: ``FAKE_WORKER_VERSION`` (protocol version it announces),
``FAKE_WORKER_NO_PONG`` (never answers pings), and DTMF on a call: ``9``
allocates and touches ``FAKE_WORKER_ALLOC_MB`` MB (memory-quota tests), ``#``
asks for a hangup, ``*`` asks for a transfer to ``operator`` and ``8`` to the
premium-rate ``+19005550199``; a failed transfer (``TransferResult`` not ok) is
answered with half a second of "sorry" audio, then a hangup ``transfer_failed``.
Each call gets half a second of audio ending in mark ``m1``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from voxgate.agents import ipc

_hog: list[bytearray] = []
_TRANSFERS = {"*": "operator", "8": "+19005550199"}


async def serve(sock: socket.socket, max_calls: int) -> None:
    channel = await ipc.Channel.open(sock)
    version = int(os.environ.get("FAKE_WORKER_VERSION", ipc.PROTOCOL_VERSION))
    await channel.send(ipc.Hello(version=version, pid=os.getpid(), max_calls=max_calls))
    ack = await channel.recv()
    assert isinstance(ack, ipc.HelloAck)
    tenant: str | None = ack.tenant_id
    calls: set[str] = set()
    no_pong = bool(os.environ.get("FAKE_WORKER_NO_PONG"))
    async for frame in channel:
        if isinstance(frame, ipc.EndWorker):
            break
        if isinstance(frame, ipc.Ping) and not no_pong:
            await channel.send(ipc.Pong(seq=frame.seq, calls=len(calls)))
        elif isinstance(frame, ipc.StartCall):
            if tenant is not None and frame.tenant_id != tenant:
                await channel.send(
                    ipc.Error(code="tenant_mismatch", message="no", call_id=frame.call_id)
                )
                continue
            tenant = frame.tenant_id
            calls.add(frame.call_id)
            await channel.send(ipc.AgentSay(call_id=frame.call_id, text="hello"))
            await channel.send(
                ipc.AudioOut(call_id=frame.call_id, seq=1, ulaw=b"\x7f" * 160 * 25, mark="m1")
            )
        elif isinstance(frame, ipc.EndCall):
            calls.discard(frame.call_id)
            await channel.send(ipc.CallEnded(call_id=frame.call_id, reason=frame.reason))
        elif isinstance(frame, ipc.Mark):
            await channel.send(
                ipc.Transcript(
                    call_id=frame.call_id, text="hello", final=True, start=0, end=0, role="agent"
                )
            )
        elif isinstance(frame, ipc.Dtmf):
            if frame.digit == "9":
                size = int(os.environ.get("FAKE_WORKER_ALLOC_MB", "0")) << 20
                block = bytearray(size)
                for i in range(0, size, 4096):
                    block[i] = 1
                _hog.append(block)
            elif frame.digit == "#":
                await channel.send(ipc.Hangup(call_id=frame.call_id, reason="bye"))
            elif frame.digit in _TRANSFERS:
                await channel.send(
                    ipc.Transfer(call_id=frame.call_id, target=_TRANSFERS[frame.digit])
                )
        elif isinstance(frame, ipc.TransferResult) and not frame.ok:
            await channel.send(ipc.AgentSay(call_id=frame.call_id, text="sorry"))
            await channel.send(
                ipc.AudioOut(call_id=frame.call_id, seq=2, ulaw=b"\x7f" * 160 * 25, mark="m2")
            )
            await channel.send(ipc.Hangup(call_id=frame.call_id, reason="transfer_failed"))
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--max-calls", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(serve(socket.socket(fileno=args.fd), args.max_calls))


if __name__ == "__main__":
    main()
