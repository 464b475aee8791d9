"""Built-in agent templates shipped with the package (``templates/*.json``).

A template is either a ``flowspec/1`` flow (kind ``flow``), the diagnostic
``echo`` agent that plays the caller's audio back, or a ``prompt`` agent that
talks through the tenant's LLM with a system prompt and no flow.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

import msgspec

from voxgate.agents.flowspec import FlowSpec, FlowValidationError, flow_to_dict, parse_flow

TemplateKind = Literal["flow", "echo", "prompt"]


class TemplateNotFoundError(LookupError):
    """No built-in template has that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no template named {name!r}")
        self.name = name


class TemplateError(ValueError):
    """A packaged template file is broken (a packaging bug, not user input)."""


class _TemplateFile(msgspec.Struct, frozen=True):
    name: str
    kind: TemplateKind
    description: str
    flow: dict[str, Any] | None = None
    prompt: str | None = None


class Template(msgspec.Struct, frozen=True):
    """A built-in template; ``flow`` is set for kind ``flow`` only."""

    name: str
    kind: TemplateKind
    description: str
    flow: FlowSpec | None = None
    prompt: str | None = None

    def flow_document(self) -> dict[str, Any] | None:
        """The flow as a JSON-ready ``flowspec/1`` document (for cloning into an agent)."""
        return flow_to_dict(self.flow) if self.flow is not None else None

    def summary(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "description": self.description}


def _load(data: bytes, source: str) -> Template:
    try:
        raw = msgspec.json.decode(data, type=_TemplateFile)
    except msgspec.DecodeError as exc:
        raise TemplateError(f"{source}: {exc}") from None
    flow: FlowSpec | None = None
    if raw.kind == "flow":
        if raw.flow is None:
            raise TemplateError(f"{source}: a flow template needs a flow")
        try:
            flow, _warnings = parse_flow(raw.flow)
        except FlowValidationError as exc:
            raise TemplateError(f"{source}: {exc}") from None
    return Template(
        name=raw.name, kind=raw.kind, description=raw.description, flow=flow, prompt=raw.prompt
    )


def _template_files() -> dict[str, bytes]:
    folder = resources.files("voxgate.agents").joinpath("templates")
    files: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            files[entry.name.removesuffix(".json")] = entry.read_bytes()
    return files


def list_templates() -> list[Template]:
    """All built-in templates, sorted by name."""
    return sorted(
        (_load(data, f"{stem}.json") for stem, data in _template_files().items()),
        key=lambda t: t.name,
    )


def get_template(name: str) -> Template:
    """The built-in template called ``name``; raises :class:`TemplateNotFoundError`."""
    # Names come from API requests: look them up in the listing, never join them into a path.
    data = _template_files().get(name)
    if data is None:
        raise TemplateNotFoundError(name)
    template = _load(data, f"{name}.json")
    if template.name != name:
        raise TemplateError(f"{name}.json declares name {template.name!r}")
    return template
