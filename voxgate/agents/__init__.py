"""What runs inside speech workers and designs conversations.

Owns: ``flowspec/1`` documents and validation, the flow engine, the intent
classifier, built-in templates, the worker entry point and speech pipeline
(VAD, STT, TTS), the worker IPC frame vocabulary.
Must not import ``voxgate.server``, ``voxgate.sip`` or ``voxgate.admin``.
"""
