"""The base of every component's options: a pydantic model in which unknown keys are errors.

Its own module so that input kinds and component interfaces can both build on it without importing
each other.
"""

from __future__ import annotations

import pydantic


class Options(pydantic.BaseModel):
    """Base for component options: unknown keys are errors, not silently ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", protected_namespaces=())
