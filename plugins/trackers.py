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
import uuid
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
        log_dir: fuse.RunPath | None = None   # default: <output_dir>/tensorboard; inside the run folder

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
        run_id = _own_run_id(run_dir, "wandb", resume_step, lambda: uuid.uuid4().hex[:8])
        self.run = wandb.init(project=options.project, entity=options.entity, name=name, config=config,
                              dir=str(run_dir), mode=options.mode or os.environ.get("WANDB_MODE"),
                              reinit="finish_previous", id=run_id, resume="allow")

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
        tracking_uri: fuse.RunPath | None = None   # default: $MLFLOW_TRACKING_URI, else file:<output_dir>/mlruns;
        # a local store (a path or file: URI) stays inside the run folder
        experiment: str = "fuse"

    requires = ("mlflow",)

    def __init__(self, options: Options, run_dir: Path, config: dict, name: str, resume_step: int | None = None):
        from mlflow.tracking import MlflowClient

        uri = options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir) / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store in maintenance mode behind this switch; a file: URI asks for it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        _reachable(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = _own_run_id(run_dir, "mlflow", resume_step, lambda: self._new_run(options.experiment, name))
        if resume_step is not None:  # the run's own MLflow run continues (params are logged once)
            self.client.update_run(self.run_id, status="RUNNING")
            return
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

    def _new_run(self, experiment: str, name: str) -> str:
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        return self.client.create_run(exp_id, run_name=name).info.run_id

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        for k, v in _scalars(record).items():
            self.client.log_metric(self.run_id, k.replace("@", "_at_"), v, step=step)  # '@' is no MLflow key

    def image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, results: dict) -> None:
        self.client.log_dict(self.run_id, results, "eval.json")
        self.client.set_terminated(self.run_id)


def _own_run_id(run_dir: Path, tracker: str, resume_step: int | None, new) -> str:
    """The tracker's run id for this fuse run: on --resume the one it started with (kept in the run folder,
    ``<tracker>-run-id``), so the resumed run continues its own tracker run; else ``new()``, recorded."""
    path = Path(run_dir) / f"{tracker}-run-id"
    if resume_step is not None and path.is_file():
        return path.read_text(encoding="utf-8").strip()
    run_id = new()
    path.write_text(run_id + "\n", encoding="utf-8")
    return run_id


CONNECT_TIMEOUT_S = 5.0


def _reachable(uri: str) -> None:
    """A remote tracking server answers within CONNECT_TIMEOUT_S, or the tracker does not start (one line),
    instead of MLflow's own retries holding the run for minutes."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(uri)
    if url.scheme not in ("http", "https"):
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {url.hostname}:{port} within {CONNECT_TIMEOUT_S:.0f} s "
                              f"({exc.strerror or exc}); start the tracking server or fix tracking_uri") from None


@fuse.hookimpl
def register_trackers(register):
    register("tensorboard", TensorBoardTracker)
    register("wandb", WandbTracker)
    register("mlflow", MlflowTracker)
