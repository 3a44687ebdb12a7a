"""The base of every component's options: a pydantic model in which unknown keys are errors.

Its own module so that input kinds and component interfaces can both build on it without importing
each other.
"""

from __future__ import annotations

import types
import typing

import pydantic


def _scalar_types(annotation) -> set:
    """The plain scalar types a field annotation admits (``int | None`` -> {int, NoneType}; Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_scalar_types(a) for a in typing.get_args(annotation)))
    return {annotation}


class Options(pydantic.BaseModel):
    """Base for component options and recipe sections: unknown keys are errors, not silently ignored;
    numbers are finite (no .inf / .nan) and numbers and booleans are what they say: YAML's ``yes`` is
    no 1 for an int, and ``1`` or ``"yes"`` no true for a bool (pydantic's lax mode would take both)."""

    model_config = pydantic.ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value, info):
        field = cls.model_fields.get(info.field_name)
        if field is None or value is None:
            return value
        admits = _scalar_types(field.annotation)
        if isinstance(value, bool) and bool not in admits and admits & {int, float}:
            raise ValueError(f"expected a number, got the boolean {str(value).lower()} (YAML reads yes/no/on/off as "
                             "booleans)")
        if admits & {bool} == admits - {type(None)} and not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
