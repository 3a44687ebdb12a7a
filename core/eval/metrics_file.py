"""Reading a run's metrics.jsonl (one JSON object per logged step or evaluation), the file
``fuse.training.metrics.MetricsFile`` writes: a resumed run trims it, sweeps rank runs by it, ``fuse plot`` and
``fuse report --compare`` draw it. It sits below the model and training layers so that every reader shares this
one reader."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    """Every row of a metrics.jsonl, in order; NaN/Inf tokens of old logs read as null, and a line cut short by a
    kill during the append is skipped (the rows before it stand)."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line, parse_constant=lambda _: None)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
