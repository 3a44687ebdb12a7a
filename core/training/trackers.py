"""The run's experiment trackers (recipe ``logging``), opened together and fed the same records.

A tracker that is not installed or cannot start is one line before the first step
(``check_trackers`` runs before data is read; ``open_trackers`` before training); one that fails
later is dropped with a warning, so a tracker's hiccup never ends a run mid-way. ``jsonl``
(metrics.jsonl) is always first: plots, resume and ``fuse report`` read it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from fuse.base.errors import PluginError
from fuse.recipes.recipe import Recipe
from fuse.training.metrics import finite_json

EXTRA = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # module -> fuse-align extra


def tracker_specs(recipe: Recipe) -> list[tuple[str, dict, str]]:
    """(name, options, recipe field) of every tracker, jsonl first and each name once."""
    specs, seen = [], set()
    for i, entry in enumerate(recipe.logging):
        name, options = (entry, {}) if isinstance(entry, str) else (entry.name, dict(entry.options))
        if name not in seen:
            seen.add(name)
            specs.append((name, options, f"logging.{i}"))
    if "jsonl" not in seen:
        specs.insert(0, ("jsonl", {}, "logging"))
    return specs


def check_trackers(recipe: Recipe) -> list[tuple[str, object, str]]:
    """Every tracker's registry entry and options, and its modules importable; else one PluginError line."""
    from fuse.base.plugin_manager import registry

    reg, checked = registry("logger"), []
    for name, options, where in tracker_specs(recipe):
        entry = reg.get(name, where)
        parsed = reg.parse_options(name, options, where)
        for module in getattr(entry.cls, "requires", ()):
            if importlib.util.find_spec(module) is None:
                extra = EXTRA.get(module)
                fix = f"pip install 'fuse-align[{extra}]'" if extra else f"pip install {module}"
                raise PluginError(f"{where}: tracker '{name}' needs the '{module}' package, which is not installed; "
                                  f"{fix}, or remove '{name}' from logging.")
        checked.append((name, (entry.cls, parsed), where))
    return checked


class Trackers:
    """Fan-out to the open trackers with one ``write(record)`` (a metrics.jsonl row); failures past the start are
    warnings. Records and results reach every tracker with NaN/Inf as null (``finite_json``), made so once here."""

    def __init__(self, opened: list[tuple[str, object]]):
        self.opened = opened

    def _each(self, call: str, *args) -> None:
        for name, tracker in list(self.opened):
            try:
                getattr(tracker, call)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker never ends a run; metrics.jsonl must
                if name == "jsonl":
                    raise
                print(f"warning: tracker '{name}' failed ({exc!r}); it logs nothing more in this run", file=sys.stderr)
                self.opened.remove((name, tracker))

    def write(self, record: dict) -> None:
        """One logged step or evaluation (metrics.jsonl's row)."""
        self._each("log", finite_json(record))

    def image(self, name: str, path: Path, step: int) -> None:
        """A picture (the metrics plot) of the run at ``step``."""
        self._each("image", name, Path(path), step)

    def finish(self, results: dict, images: list[Path] = (), step: int = 0) -> None:
        """The run's end: its plots and final before/after results, then each tracker closes."""
        for path in images:
            self.image(Path(path).stem, path, step)
        self._each("finish", finite_json(results))


def open_trackers(recipe: Recipe, run_dir: Path, resume_step: int | None) -> Trackers:
    """Start every tracker of ``recipe`` (rank 0 only) with the resolved recipe as its config."""
    config = recipe.model_dump(mode="json")
    opened = []
    for name, (cls, options), where in check_trackers(recipe):
        try:
            opened.append((name, cls(options, run_dir=Path(run_dir), config=config, name=recipe.name,
                                     resume_step=resume_step)))
        except Exception as exc:  # noqa: BLE001 - one line naming the tracker, before any step runs
            raise PluginError(f"{where}: tracker '{name}' could not start: {exc}. Fix it or remove '{name}' "
                              "from logging.") from exc
    return Trackers(opened)
