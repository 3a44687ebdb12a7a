"""Turn pydantic validation errors into one readable message with field paths."""

from __future__ import annotations

import pydantic


def format_validation_error(err: pydantic.ValidationError, prefix: str = "", title: str = "Invalid recipe") -> str:
    """A pydantic error as one line of `field.path: problem` items."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        path = ".".join(p for p in (prefix, loc) if p)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (remove it or check its spelling)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{path or '<root>'}: {msg}")
    return f"{title}: " + "; ".join(lines)
