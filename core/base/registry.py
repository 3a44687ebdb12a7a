"""Typed registries: one per component kind, mapping a registered name to its class.

A recipe names components by these names (never by import path), so loading a recipe can
only ever build classes that installed plugins registered.

What an encoder consumes is declared once, when it registers: ``register(name, cls,
modalities=(kind, ...))`` names the registered input kinds it reads (the keyword is historical:
it means input kinds, not the recipe's tower names). Registration checks that every kind is
registered; building an encoder checks that its ``EncoderInfo.input`` is one of them.
(``EncoderInfo.modality`` is not a declaration: the model sets it to the recipe's tower name.)
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import pydantic

from fuse.base.errors import PluginError, RecipeError
from fuse.base.validation import format_validation_error


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

    def checked(self, obj):
        """A component just built from this entry, checked against its registration: an encoder's
        ``info.input`` must be an input kind it declared (``modalities=``); a PluginError otherwise."""
        if self.kind == "encoder":
            info = getattr(obj, "info", None)
            kind = getattr(info, "input", None)
            if kind not in self.modalities:
                raise PluginError(
                    f"encoder '{self.name}' from {self.package}: {type(obj).__name__} sets EncoderInfo.input to "
                    f"{kind!r} but registered modalities={self.modalities} (the input kinds it consumes); "
                    "make them agree (set self.info in __init__, or fix the register call).")
        return obj


@dataclass
class Registry:
    """name -> Entry for one kind (encoder, head, objective, dataset)."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)
    instances: dict[str, object] = field(default_factory=dict)  # shared objects of stateless kinds (inputs)
    inputs: "Registry | None" = None  # the encoder registry's input kinds, registered before encoders

    def register(self, name: str, cls: type, *, package: str = "unknown", modalities=(),
                 description: str | None = None) -> None:
        """Add a component; a duplicate name, a class without an Options schema, or an encoder whose
        ``modalities`` (the input kinds it consumes) are missing or unregistered is a PluginError."""
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
        if self.kind == "encoder":
            self._check_input_kinds(name, cls, package, tuple(modalities))
        doc = description if description is not None else (cls.__doc__ or "").strip().split("\n")[0]
        self.entries[name] = Entry(self.kind, name, cls, package, tuple(modalities), doc)

    def _check_input_kinds(self, name: str, cls: type, package: str, kinds: tuple[str, ...]) -> None:
        """An encoder declares at least one input kind, each registered (input kinds register first)."""
        if not kinds:
            raise PluginError(f"encoder '{name}' from {package}: declare the input kinds it consumes when "
                              f"registering it, e.g. register('{name}', {cls.__name__}, modalities=('text',)).")
        unknown = [k for k in kinds if self.inputs is not None and k not in self.inputs.entries]
        if unknown:
            raise PluginError(f"encoder '{name}' from {package} consumes input kind '{unknown[0]}', which no installed "
                              f"plugin registers (registered kinds: {self.inputs.describe_available()}); install "
                              "the plugin that provides it, or register the kind with register_input_kinds.")

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
        obj = entry.checked(entry.cls(parsed, **context))
        # Remember how to rebuild it: exports and checkpoints store (name, options), never code.
        obj.registered_name = name
        return obj
