"""The control-plane services one server process uses, opened and closed together."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxgate.admin.status import SystemStatus
from voxgate.server.config import Config
from voxgate.tenants.admin_token import AdminTokens
from voxgate.tenants.agents import AgentStore
from voxgate.tenants.apikeys import ApiKeys
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.crypto import load_master_key
from voxgate.tenants.numbers import Numbers
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.secrets import SecretVault
from voxgate.tenants.store import Store


@dataclass(slots=True)
class Services:
    """Everything handlers and CLI commands call; built by :meth:`open`, never global."""

    store: Store
    registry: TenantRegistry
    apikeys: ApiKeys
    admin_tokens: AdminTokens
    secrets: SecretVault
    numbers: Numbers
    agents: AgentStore
    audit: AuditLog
    status: SystemStatus = field(default_factory=SystemStatus)

    @classmethod
    async def open(cls, config: Config) -> Services:
        """Open the store (embedded Redis unless ``redis_url``) and build the services."""
        store = await Store.open(redis_url=config.redis_url, data_dir=config.data_dir)
        try:
            master_key = load_master_key(config.data_dir, config.master_key)
        except BaseException:
            await store.close()
            raise
        return cls.build(store, master_key)

    @classmethod
    def build(cls, store: Store, master_key: bytes) -> Services:
        registry = TenantRegistry(store, master_key)
        services = cls(
            store=store,
            registry=registry,
            apikeys=ApiKeys(store, master_key),
            admin_tokens=AdminTokens(store, master_key),
            secrets=SecretVault(store, master_key),
            numbers=Numbers(store),
            agents=AgentStore(store),
            audit=AuditLog(store),
        )
        services.status.tenants = registry.list
        return services

    async def close(self) -> None:
        await self.store.close()
