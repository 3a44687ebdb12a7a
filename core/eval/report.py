"""Small printed tables of metrics."""

from __future__ import annotations


def format_table(columns: dict[str, dict[str, float]], keys: list[str] | None = None) -> str:
    """Rows = metric names, columns = named result sets (e.g. before / after)."""
    names = list(columns)
    if keys is None:
        keys = [k for k in next(iter(columns.values())) if "R@" in k or k.endswith("acc")]
    width = max(len(k) for k in keys) if keys else 6
    colw = max(12, *(len(n) for n in names))
    lines = [" " * width + "  " + "  ".join(f"{n:>{colw}}" for n in names)]
    for k in keys:
        cells = []
        for n in names:
            v = columns[n].get(k)
            cells.append(f"{v:>{colw}.2f}" if isinstance(v, (int, float)) else f"{'-':>{colw}}")
        lines.append(f"{k:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
