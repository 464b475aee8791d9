"""Load callers that behave like real telephony peers and measure voxgate.

``loadtest.twilio_caller`` plays Twilio towards the server (signed voice
webhook, TwiML, bidirectional Media Streams with real µ-law audio on real-time
clocks) and reports turn latency, jitter and playback gaps.
``loadtest.audio`` loads the caller audio fixtures.

This package imports ``voxgate.media`` for codecs and webhook signatures only;
it never imports the server, so it measures voxgate from the outside.
"""
