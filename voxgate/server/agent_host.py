"""Which ``CallAgent`` talks on a call, chosen by the agent's kind.

``echo`` and ``prompt`` are the diagnostic agents of the media core.
``flow`` agents run in speech workers; their supervisor registers a factory
for the kind when it starts (:meth:`AgentHost.register`). Until one is
registered — or when a factory fails — the call gets :class:`FallbackAgent`,
which ends the media at once so the provider plays the fallback it was given
(for Twilio, the apology TwiML after ``<Connect>``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from voxgate.media.call import Call, EndReason
from voxgate.media.channel import CallAgent, MediaChannel
from voxgate.media.diagnostics import EchoAgent, PromptAgent
from voxgate.tenants.models import Agent

__all__ = ["AgentFactory", "AgentHost", "FallbackAgent"]

log = logging.getLogger("voxgate.calls")

# Builds the agent for one call; must not block (heavy work belongs in ``run``).
AgentFactory = Callable[[Agent, Call], CallAgent]


class FallbackAgent:
    """No agent can serve this call: end the media so the provider's fallback runs."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def run(self, channel: MediaChannel) -> None:
        channel.call.record(time.time(), "fallback", self.reason)
        await channel.hangup(EndReason.WORKER_LOST)


def _echo(_agent: Agent, _call: Call) -> CallAgent:
    return EchoAgent()


def _prompt(_agent: Agent, _call: Call) -> CallAgent:
    return PromptAgent()


class AgentHost:
    """Registry of agent factories by kind (one per app, passed in, never global)."""

    def __init__(self) -> None:
        self._factories: dict[str, AgentFactory] = {"echo": _echo, "prompt": _prompt}

    def register(self, kind: str, factory: AgentFactory) -> None:
        """Serve agents of ``kind`` with ``factory`` (replaces an earlier one)."""
        self._factories[kind] = factory

    def unregister(self, kind: str) -> None:
        self._factories.pop(kind, None)

    def kinds(self) -> list[str]:
        return sorted(self._factories)

    def create(self, agent: Agent, call: Call) -> CallAgent:
        """The agent for ``call``; a fallback when none can be built."""
        factory = self._factories.get(agent.kind)
        if factory is None:
            return FallbackAgent(f"no runtime for {agent.kind} agents")
        try:
            return factory(agent, call)
        except Exception:
            log.exception("building a %s agent for call %s failed", agent.kind, call.call_id)
            return FallbackAgent(f"{agent.kind} agent failed to start")
