"""voxgate: multi-tenant, real-time voice-agent telephony server."""

__version__ = "0.1.0"
