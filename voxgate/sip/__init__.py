"""Our own SIP stack: sans-IO message parsing, transactions, dialogs, SDP, digest,
RTP/RTCP and jitter buffering, plus thin asyncio transports and trunk registrations.

Must not import ``voxgate.server``, ``voxgate.agents`` or ``voxgate.admin``;
it may use ``voxgate.media`` for frames and codecs.
"""
