"""A registered component with validated options (``Spec``): the one form every stage passes around.

Plans, exports and caches all hold specs; resolving one needs only the plugin registry, so the export
format and the model can rebuild components without importing the recipe machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic


@dataclass(frozen=True)
class Spec:
    """A registered component with validated options: the one form every stage passes around."""

    kind: str
    name: str
    options: pydantic.BaseModel
    package: str
    where: str = ""

    @property
    def cls(self) -> type:
        """The registered class (looked up again, so a plan survives pickling across processes)."""
        return self.entry.cls

    @property
    def entry(self):
        """The registry entry (fuse.base.registry.Entry) this spec was resolved from."""
        from fuse.base.plugin_manager import registry

        return registry(self.kind).get(self.name, self.where)

    def build(self, **context):
        """The component itself: ``cls(options, **context)``."""
        entry = self.entry
        obj = entry.checked(entry.cls(self.options, **context))  # an encoder's info.input: one it declared
        obj.registered_name = self.name
        obj.spec = self
        return obj

    def as_dict(self) -> dict[str, Any]:
        """Name and options with every default filled: what exports store and cache keys hash."""
        return {"name": self.name, "options": self.options.model_dump(mode="json")}


def resolve_spec(kind: str, name: str, options: dict | None, where: str = "") -> Spec:
    """Look ``name`` up in the ``kind`` registry and validate ``options`` against its schema."""
    from fuse.base.plugin_manager import registry

    reg = registry(kind)
    entry = reg.get(name, where)
    return Spec(kind, name, reg.parse_options(name, options, where), entry.package, where)
