"""Audio and call plumbing of the media core.

Owns: 20 ms PCM frames, G.711 codecs, resampling, pacing, outbound queues,
DTMF, recordings, the ``Call`` state machine, the ``MediaChannel`` interface,
the Twilio Media Streams adapter, the WebRTC (aiortc) adapter (``webrtc_*``,
imported only where browser calls are served), diagnostic agents (echo, prompt).
Must not import ``voxgate.server``, ``voxgate.agents``, ``voxgate.sip`` or
``voxgate.admin``; nothing here blocks or runs model inference.
"""
