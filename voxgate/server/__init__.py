"""The media core's wiring: CLI, configuration, aiohttp app and routes, worker supervisor.

Owns: ``voxgate`` command line, :class:`~voxgate.server.config.Config`, HTTP/WS
routes (REST API, Twilio webhook and media stream, metrics), OpenAPI generation,
the speech-worker supervisor.  It may import every other ``voxgate`` package;
nothing else imports it.
"""
