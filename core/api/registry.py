"""Typed registries: one per component kind, mapping a registered name to its class.

A recipe names components by these names (never by import path), so loading a recipe can
only ever build classes that installed plugins registered.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import pydantic

from fuse.api.errors import PluginError, RecipeError
from fuse.api.validation import format_validation_error


@dataclass(frozen=True)
class Entry:
    """One registered component: its class, options schema and where it came from."""

    kind: str
    name: str
    cls: type
    package: str
    modalities: tuple[str, ...] = ()
    description: str = ""

    @property
    def options_schema(self) -> type[pydantic.BaseModel]:
        """The component's pydantic options model."""
        return self.cls.Options


@dataclass
class Registry:
    """name -> Entry for one kind (encoder, head, objective, dataset)."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)
    instances: dict[str, object] = field(default_factory=dict)  # shared objects of stateless kinds (inputs)

    def register(self, name: str, cls: type, *, package: str = "unknown", modalities=(),
                 description: str | None = None) -> None:
        """Add a component; a duplicate name or a class without an Options schema is a PluginError."""
        if name in self.entries:
            other = self.entries[name].package
            raise PluginError(
                f"{self.kind} '{name}' is registered twice: by {other} and by {package}. "
                f"Uninstall one of them or ask its author to rename it.")
        options = getattr(cls, "Options", None)
        if not (isinstance(options, type) and issubclass(options, pydantic.BaseModel)):
            raise PluginError(
                f"{self.kind} '{name}' from {package}: {cls.__name__} needs a nested "
                f"`Options(pydantic.BaseModel)` class describing its options.")
        if isinstance(modalities, str):
            modalities = (modalities,)
        doc = description if description is not None else (cls.__doc__ or "").strip().split("\n")[0]
        self.entries[name] = Entry(self.kind, name, cls, package, tuple(modalities), doc)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a wildcard pattern, sorted."""
        return sorted(n for n in self.entries if fnmatch.fnmatch(n, pattern))

    def describe_available(self) -> str:
        """'name (package), ...' for error messages that list what is available."""
        if not self.entries:
            return "none registered"
        return ", ".join(f"{e.name} ({e.package})" for e in sorted(self.entries.values(), key=lambda e: e.name))

    def get(self, name: str, where: str = "") -> Entry:
        """The entry of a name; an unknown name is a RecipeError listing the registered ones."""
        try:
            return self.entries[name]
        except KeyError:
            at = f" at {where}" if where else ""
            raise RecipeError(
                f"Unknown {self.kind} '{name}'{at}; registered: {self.describe_available()}. "
                f"Install the plugin that provides it, or pick a registered name.") from None

    def parse_options(self, name: str, options: dict[str, Any] | None, where: str = "") -> pydantic.BaseModel:
        """Validate options against the component's schema; errors name the field path."""
        entry = self.get(name, where)
        try:
            return entry.options_schema.model_validate(options or {})
        except pydantic.ValidationError as err:
            raise RecipeError(format_validation_error(err, prefix=f"{where}.options" if where else "options",
                                                      title=f"Invalid options for {self.kind} '{name}'")) from None

    def create(self, name: str, options: dict[str, Any] | None = None, where: str = "", **context):
        """Build a component: validate its options, then call cls(options, **context)."""
        entry = self.get(name, where)
        parsed = self.parse_options(name, options, where)
        obj = entry.cls(parsed, **context)
        # Remember how to rebuild it: exports and checkpoints store (name, options), never code.
        obj.registered_name = name
        return obj
