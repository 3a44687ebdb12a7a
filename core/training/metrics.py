"""metrics.jsonl (one JSON object per logged step or evaluation) and its PNG plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from fuse.eval.metrics_file import read_metrics

FILE = "metrics.jsonl"


def finite_json(value):
    """``value`` with NaN and Inf floats as null, so every line stays valid JSON (json.dumps would write NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def higher_is_better(metric: str) -> bool:
    """Recalls and accuracies grow as a model improves; ranks (mean_rank, median_rank) shrink."""
    return not metric.rsplit("/", 1)[-1].endswith("rank")


def score(metric: str, value: float) -> float:
    """``value`` oriented so that higher is always better (ranks negated): what 'best' compares."""
    return value if higher_is_better(metric) else -value


class MetricsFile:
    """A run's metrics.jsonl: one JSON object per logged step or evaluation, appended as it happens.

    Core owns this format: plots, ``--resume`` and ``fuse report`` read it, so it is always written, in the
    run folder, by this class alone (trackers are extra copies elsewhere). On resume the rows after the
    resumed checkpoint are dropped first, because those steps run again.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = Path(run_dir) / FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
        os.replace(tmp, self.path)  # atomic: a kill leaves the old log or the new one

    def write(self, record: dict) -> None:
        """Append one row (NaN/Inf already null: ``finite_json``)."""
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")


def plot_metrics(jsonl: Path, png: Path) -> Path:
    """Loss terms, learning rate, temperature and validation recall against the step."""
    import matplotlib

    matplotlib.use("Agg")

    matplotlib.rcParams["text.parse_math"] = False   # labels are text as written ('costs $5^$')
    import matplotlib.pyplot as plt

    rows = read_metrics(jsonl)
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    loss_keys = sorted({k for r in train for k in r if k == "loss" or k.startswith("loss/")})
    other = [k for k in ("lr", "temperature") if any(k in r for r in train)]
    recall_keys = sorted({k for r in val for k in r if "/R@" in k and not k.startswith("mean/")})
    panels = [("loss", loss_keys, train)] + [(k, [k], train) for k in other] + [("val recall (%)", recall_keys, val)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, keys, data) in zip(axes, panels):
        for k in keys:
            pts = [(r["step"], r[k]) for r in data if r.get(k) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o" if data is val else None, ms=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)
