"""Experiment trackers: where a run's scalars, evaluation tables and plots go besides the terminal.

A tracker is a class with an ``Options`` schema, ``requires`` (the modules it imports, so a missing
extra is one line before training starts) and four calls the loop makes on rank 0:

    Tracker(options, run_dir=..., config=<the resolved recipe as a dict>, name=..., resume_step=...)
    .log(record)           # {"kind": "train" | "val" | ..., "step": N, "epoch": E, <metric>: value, ...}; NaN/Inf as null
    .image(name, path, step)
    .finish(results)       # eval.json's content: before / after tables, best epoch

metrics.jsonl (what ``fuse plot``, resume and ``fuse report`` read) is core's own file, always written
(``fuse.training.metrics.MetricsFile``); these trackers are extra copies of the same records.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import fuse


def _scalars(record: dict) -> dict[str, float]:
    """A record's finite numbers, keyed '<kind>/<metric>' (train/loss, val/mean/R@1)."""
    kind = record.get("kind", "train")
    return {f"{kind}/{k}": float(v) for k, v in record.items()
            if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


class TensorBoardTracker:
    """TensorBoard event files (torch.utils.tensorboard) under <run>/tensorboard: scalars, tables as text, plots."""

    class Options(fuse.Options):
        log_dir: str | None = None   # default: <output_dir>/tensorboard

    requires = ("tensorboard",)

    def __init__(self, options: Options, run_dir: Path, config: dict, name: str, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=options.log_dir or str(Path(run_dir) / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)
        self.writer.add_text("recipe", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        for k, v in _scalars(record).items():
            self.writer.add_scalar(k, v, step)
        if record.get("kind") == "val":
            rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in record.items()
                             if isinstance(v, float) and k not in ("step", "epoch"))
            self.writer.add_text("val/table", "| metric | value |\n|---|---|\n" + rows, step)
        self.writer.flush()

    def image(self, name: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        self.writer.add_image(name, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")

    def finish(self, results: dict) -> None:
        self.writer.add_text("results", "```\n" + json.dumps(results, indent=2) + "\n```", 0)
        self.writer.close()


class WandbTracker:
    """Weights & Biases; WANDB_MODE=offline writes the run under <run>/wandb for `wandb sync` later."""

    class Options(fuse.Options):
        project: str = "fuse"
        entity: str | None = None
        mode: str | None = None   # online / offline / disabled; default: $WANDB_MODE, else wandb's own default

    requires = ("wandb",)

    def __init__(self, options: Options, run_dir: Path, config: dict, name: str, resume_step: int | None = None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=options.project, entity=options.entity, name=name, config=config,
                              dir=str(run_dir), mode=options.mode or os.environ.get("WANDB_MODE"),
                              reinit="finish_previous")

    def log(self, record: dict) -> None:
        self.run.log(_scalars(record), step=int(record.get("step", 0)))

    def image(self, name: str, path: Path, step: int) -> None:
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def finish(self, results: dict) -> None:
        for split in ("before", "after"):
            for k, v in (results.get(split) or {}).items():
                if isinstance(v, (int, float)):
                    self.run.summary[f"{split}/{k}"] = v
        self.run.finish()


class MlflowTracker:
    """MLflow: params from the recipe, metrics per step, the plot and eval.json as artifacts."""

    class Options(fuse.Options):
        tracking_uri: str | None = None   # default: $MLFLOW_TRACKING_URI, else file:<output_dir>/mlruns
        experiment: str = "fuse"

    requires = ("mlflow",)

    def __init__(self, options: Options, run_dir: Path, config: dict, name: str, resume_step: int | None = None):
        from mlflow.tracking import MlflowClient

        uri = options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir) / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store in maintenance mode behind this switch; a file: URI asks for it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(options.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(options.experiment)
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id
        flat = {}

        def walk(prefix, node):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                flat[prefix] = json.dumps(node) if isinstance(node, (list, tuple)) else str(node)

        walk("", config)
        for k, v in flat.items():
            self.client.log_param(self.run_id, k[:250], v[:6000])

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        for k, v in _scalars(record).items():
            self.client.log_metric(self.run_id, k.replace("@", "_at_"), v, step=step)  # '@' is no MLflow key

    def image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, results: dict) -> None:
        self.client.log_dict(self.run_id, results, "eval.json")
        self.client.set_terminated(self.run_id)


@fuse.hookimpl
def register_trackers(register):
    register("tensorboard", TensorBoardTracker)
    register("wandb", WandbTracker)
    register("mlflow", MlflowTracker)
