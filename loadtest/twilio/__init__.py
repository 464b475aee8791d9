"""``python -m loadtest.twilio``: run Twilio-protocol load calls against voxgate.

The caller itself lives in ``loadtest.twilio_caller``; this package is its
command line.
"""
