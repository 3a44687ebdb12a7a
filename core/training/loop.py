"""The training loop: align any number of encoders with trainable heads, in one readable file.

    fuse train recipes/quickstart.yaml                        # one process, device auto
    fuse train recipes/vision_text.yaml train.epochs=3 output_dir=runs/x
    torchrun --nproc_per_node 8 -m fuse train recipes/fusemix_vision_text.yaml

Shape: setup (``fuse.training.setup``: plan, data, model, cached latents, objectives, optimiser,
and who does what: ``Distribution``) -> eval before -> train (steps that draw one batch from every
trained pair; log, evaluate, checkpoint) -> save (best weights, export, plot) -> cleanup.
Batches, the step's loss, checkpoints, precision, distribution and the schedule are small helpers
called from here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fuse.base.atomic import write_text
from fuse.base.errors import RecipeError, TrainingDiverged
from fuse.base.weights import save_weights
from fuse.eval.tables import format_table
from fuse.eval.val_split import evaluate_split
from fuse.model.export import export_model
from fuse.recipes.plan import Plan
from fuse.training import distributed
from fuse.training.batches import first_micro_step
from fuse.training.checkpoints import epoch_file, keep_best, load_weights, prune_checkpoints, step_file, trainable_state
from fuse.training.finite import diverged_message
from fuse.training.fsdp import full_optimizer_state, unshard_encoders
from fuse.training.lora import apply_lora, merge_loras
from fuse.training.metrics import finite_json, plot_metrics, score
from fuse.training.preempt import Preempted, Preemption
from fuse.training.resume import restore, save_state
from fuse.training.rundir import owned_run
from fuse.training.setup import Run, pass_batches, setup


@dataclass
class Progress:
    """Where the run stands: what a checkpoint records and the log reports."""

    step: int = 0                 # optimiser steps taken
    best: float = -math.inf       # the best validation score so far (train.best_metric)
    best_epoch: int | None = None
    epoch: int = 0                # the last epoch begun
    seen: int = 0                 # samples this rank has stepped over since t0
    t0: float = 0.0
    results: dict = field(default_factory=dict)  # eval.json: before, after, best_epoch


def train(plan: Plan, recipe_path: str | None = None, resume: bool = False, overwrite: bool = False) -> Path:
    """Run a resolved recipe (``fuse.recipes.plan.load_plan``) end to end; returns the run directory. ``resume`` continues the run in
    ``output_dir`` after its last checkpoint (see ``fuse.training.resume``). SIGTERM during the steps
    checkpoints and raises ``Preempted`` (see ``fuse.training.preempt``). Under torchrun only rank 0 prints.
    The run holds output_dir's lock throughout; ``overwrite`` moves an earlier run aside (``fuse.training.rundir``)."""
    quiet = int(os.environ.get("RANK", "0")) != 0  # torchrun's rank: known before the process group exists
    with owned_run(Path(plan.recipe.output_dir), resume, overwrite, plan.recipe.name), \
            Preemption() as preemption, open(os.devnull, "w") as devnull, \
            contextlib.redirect_stdout(devnull) if quiet else contextlib.nullcontext():
        return _train(plan, recipe_path, resume, preemption)


def _train(plan: Plan, recipe_path: str | None, resume: bool, preemption: Preemption) -> Path:
    run = setup(plan, resume)                       # setup
    progress = begin(run)                           # eval before; a resumed run's place
    train_epochs(run, progress, preemption, recipe_path)   # train
    save(run, progress, recipe_path)                # save
    # cleanup: the DDP reducer holds the process group: let it go while the group still lives. Freed
    # after destroy_process_group, the group's destructor joins gloo's worker threads with the GIL held
    # while a worker may need the GIL to free a finished collective's tensors (a hang at exit).
    run.trainer = run.backward = None
    distributed.cleanup()
    return run.run_dir


def validate(run: Run) -> dict:
    """Validation retrieval of the current weights."""
    recipe = run.recipe
    return evaluate_split(run.model, run.splits["val"], run.latents["val"], run.trained, recipe.eval.ks,
                          recipe.eval.chunk_size, recipe.data.encode_batch_size)


def begin(run: Run) -> Progress:
    """Evaluate the untrained heads, and pick up a resumed run's weights, optimiser and counters."""
    progress, state = Progress(), run.state
    if "val" in run.splits and run.dist.gathers:
        progress.results["before"] = validate(run)
        if run.dist.main and state is None:
            run.log.write({"kind": "val", "step": 0, "epoch": 0, **progress.results["before"]})
    if state is not None:
        load_weights(run.step_module, state["weights"])
        restore(state, run.optimizer, run.scheduler, run.precision, run.step_module)
        progress.step, progress.best, progress.best_epoch = state["step"], state["best"], state["best_epoch"]
        progress.epoch = state["epoch"]
        run.guard.skipped = state.get("skipped_steps", 0)  # state.pt files before this count was saved: 0
        done = progress.step - state["epoch"] * run.per_epoch  # steps of the next epoch taken (a mid-epoch checkpoint)
        print(f"resuming after epoch {state['epoch']} (step {progress.step}) from {state['weights']}" if not done else
              f"resuming at step {progress.step} ({done} of {run.per_epoch} steps into epoch {state['epoch'] + 1}) "
              f"from {state['weights']}")
    return progress


def whole_weights(run: Run) -> dict | None:
    """The trainable weights, whole on rank 0 (every gathering rank takes part under FSDP); None elsewhere."""
    return trainable_state(run.step_module, keep=run.dist.main) if run.dist.gathers else None


def unshard(run: Run) -> None:
    """Whole encoders again on rank 0 after FSDP (for a roll-back, the final evaluation and the export)."""
    if run.dist.sharded:
        unshard_encoders(run.model.encoders, list(run.online), lambda m: _rebuilt(run, m), keep=run.dist.main)


def _rebuilt(run: Run, m: str):
    """A fresh encoder of tower ``m`` shaped like the trained one (with LoRA's wrappers where the recipe has
    lora), so the gathered state loads into it; merge_loras folds the adapters in before the export."""
    encoder = run.plan.towers[m].encoder.build()
    lora = run.recipe.modalities[m].encoder.lora
    if lora is not None:
        apply_lora(encoder, lora, f"modalities.{m}.encoder.lora")
    return encoder


def checkpoint(run: Run, progress: Progress, weights_file: Path, epochs_done: int, weights_written: bool = False):
    """Weights (unless written already) and state.pt after this step; every rank calls it (FSDP gathers)."""
    weights = whole_weights(run) if not weights_written else None
    optimizer_state = full_optimizer_state(run.optimizer, keep=run.dist.main) if run.dist.gathers else None
    if run.dist.main:
        if not weights_written:
            save_weights(weights, weights_file)
        save_state(run.ckpt_dir, weights=weights_file, epoch=epochs_done, step=progress.step, best=progress.best,
                   best_epoch=progress.best_epoch, optimizer_state=optimizer_state, scheduler=run.scheduler,
                   precision=run.precision, modules=run.step_module, skipped_steps=run.guard.skipped)


def train_epochs(run: Run, progress: Progress, preemption: Preemption, recipe_path: str | None) -> None:
    """Epochs of steps, each ending in a checkpoint and (every train.eval_every) an evaluation."""
    from tqdm.auto import tqdm

    bar = tqdm(total=run.total_steps, initial=progress.step, desc="train", disable=not run.dist.main, unit="step")
    progress.t0, progress.seen = time.perf_counter(), 0
    preemption.arm(run.device, every=run.recipe.train.log_every)
    for epoch in range(progress.epoch + 1, run.epochs + 1):
        progress.epoch = epoch
        run_epoch(run, progress, bar, preemption)
        # A non-finite step never reaches a checkpoint: stop with the last good one kept.
        failed = run.guard.failure()
        if failed:
            bar.close()
            unshard(run)  # rank 0 rolls back and exports whole encoders
            stop_diverged(failed, run, recipe_path)
        end_epoch(run, progress)
        if progress.step >= run.total_steps:
            break
        if preemption.requested(progress.step):  # SIGTERM during an epoch's last step: its checkpoint is the one
            bar.close()
            distributed.barrier()
            raise Preempted(progress.step, run.run_dir)
    bar.close()


def run_epoch(run: Run, progress: Progress, bar, preemption: Preemption) -> None:
    """One epoch's optimiser steps (a resumed epoch skips those it took), each over train.grad_accum
    micro-batches; stops early at the last step, a non-finite step, or SIGTERM (after a checkpoint)."""
    recipe, accum, epoch = run.recipe, run.recipe.train.grad_accum, progress.epoch
    # Each epoch begins a fresh pass of the reference pair; batches depend on the step alone.
    start = first_micro_step(progress.step, run.per_epoch, accum, pass_batches(run.plan, run.streams))
    batches = {p: s.iterate(start) for p, s in run.streams.items()}
    run.trainer.train()
    for m in run.frozen:
        run.model.encoders[m].eval()  # frozen towers keep eval-mode BatchNorm/dropout
    for _ in range(progress.step - (epoch - 1) * run.per_epoch, run.per_epoch):
        for j in range(accum):  # accumulate gradients over micro-batches, then one optimiser step
            batch = {p: next(it) for p, it in batches.items()}
            loss, terms = run.backward(batch, 1 / accum, last=j == accum - 1)  # plain or GradCache
            run.step_module.commit()
            progress.seen += sum(rows.shape[0] for rows, *_ in batch.values())
        lr = run.optimizer.param_groups[0]["lr"]  # the rate this step used
        step = progress.step
        ok = run.guard.check(step + 1, loss, terms, run.params)  # on the device: no host sync here
        log_step = (step + 1) % recipe.train.log_every == 0 or step == 0 or step + 1 == run.total_steps
        if run.guard.skip(ok):  # skip_step: drop a non-finite step's update
            run.optimizer.zero_grad(set_to_none=True)
            grad_norm = None
        else:  # the gradient norm only when clipping or logging: a tensor or None
            grad_norm = run.precision.step(run.optimizer, run.params, recipe.optim.grad_clip,
                                           norm=run.dist.gathers and log_step)
        run.scheduler.step()
        progress.step = step = step + 1
        bar.update(1)
        if log_step and run.guard.failure():  # read the flag only when logging
            return
        if run.dist.main and log_step:  # the only place a step waits for the device (.item(), float())
            log_train(run, progress, loss, terms, lr, grad_norm)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step >= run.total_steps:
            return
        # Inside an epoch: a checkpoint every train.checkpoint_every steps, and on SIGTERM (then stop).
        every, stop = recipe.train.checkpoint_every, preemption.requested(step)
        if (stop or (every and step % every == 0)) and step % run.per_epoch:  # an epoch's end checkpoints later
            if run.guard.failure():
                return  # a non-finite step never reaches a checkpoint
            checkpoint(run, progress, step_file(run.ckpt_dir, step), epoch - 1)
            if stop:
                bar.close()
                distributed.barrier()  # rank 0 has written the checkpoint
                raise Preempted(step, run.run_dir)


def log_train(run: Run, progress: Progress, loss, terms: dict, lr: float, grad_norm) -> None:
    """One metrics.jsonl row for the step just taken (rank 0)."""
    row = {"kind": "train", "step": progress.step, "epoch": progress.epoch, "loss": loss.item(), "lr": lr,
           "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
           "samples_per_s": progress.seen * run.dist.world / (time.perf_counter() - progress.t0)}
    if run.guard.mode == "skip_step":
        row["skipped_steps"] = run.guard.skipped
    row.update({f"loss/{k}": v.item() for k, v in terms.items()} if len(terms) > 1 else {})
    for key, obj in run.objectives.items():
        row.update({(f"{k}/{key}" if len(run.plan.pairs) > 1 else k): v for k, v in obj.metrics().items()})
    run.log.write(row)


def end_epoch(run: Run, progress: Progress) -> None:
    """Evaluate, checkpoint, keep the best by the recipe's metric (under FSDP every rank evaluates)."""
    recipe, epoch, main = run.recipe, progress.epoch, run.dist.main
    weights = whole_weights(run)
    due = "val" in run.splits and (epoch % recipe.train.eval_every == 0 or progress.step >= run.total_steps)
    metrics = validate(run) if due and run.dist.gathers else None
    if main:
        save_weights(weights, epoch_file(run.ckpt_dir, epoch))
        if metrics is not None:
            run.log.write({"kind": "val", "step": progress.step, "epoch": epoch, **metrics})
            if recipe.train.best_metric not in metrics:
                raise RecipeError(f"train.best_metric: '{recipe.train.best_metric}' is not a val metric; "
                                  f"available: {', '.join(metrics)}")
            if score(recipe.train.best_metric, metrics[recipe.train.best_metric]) > progress.best:
                progress.best, progress.best_epoch = score(recipe.train.best_metric,
                                                           metrics[recipe.train.best_metric]), epoch
                keep_best(run.ckpt_dir, epoch)
    checkpoint(run, progress, epoch_file(run.ckpt_dir, epoch), epoch, weights_written=True)
    if main:
        prune_checkpoints(run.ckpt_dir, recipe.train.keep_checkpoints)


def save(run: Run, progress: Progress, recipe_path: str | None) -> None:
    """The best weights evaluated, eval.json, the metrics plot and the export (rank 0)."""
    unshard(run)  # whole encoders on rank 0 for the final evaluation and the export
    if not run.dist.main:
        return
    results, run_dir = progress.results, run.run_dir
    if progress.best_epoch is not None:
        load_weights(run.step_module, run.ckpt_dir / "best.safetensors")
        results["after"] = validate(run)
        results["best_epoch"] = progress.best_epoch
    else:
        keep_best(run.ckpt_dir, progress.epoch)
    write_text(run_dir / "eval.json", json.dumps(finite_json(results), indent=2))
    if "after" in results:
        print(format_table({"before (untrained heads)": results["before"],
                            f"after (best epoch {progress.best_epoch})": results["after"]}))
    plot_metrics(run_dir / "metrics.jsonl", run_dir / "metrics.png")
    run.log.finish(results, [run_dir / "metrics.png"], progress.step)
    export_run(run, {"recipe": recipe_path or run.recipe.name, "metrics": results}, [run_dir / "metrics.png"])
    print(f"run dir: {run_dir}  (metrics.jsonl, metrics.png, eval.json, checkpoints/, export/)")


def export_run(run: Run, card: dict, plots: list[Path] = ()) -> None:
    """RUN/export from the model as it stands: LoRA adapters folded into the weights first (no peft to load it)."""
    merge_loras(run.model, run.recipe)
    export_model(run.model, run.run_dir / "export", card=card, pairs=run.trained, force=True, plots=list(plots))


def stop_diverged(failed, run: Run, recipe_path: str | None):
    """Stop a run whose loss or gradients went NaN/Inf: log it, keep the last good checkpoint (and
    export the best good one, train.export_on_failure), then raise one line."""
    step, parts = failed
    recipe, run_dir, ckpt_dir = run.recipe, run.run_dir, run.ckpt_dir
    kept = "No epoch had completed, so there is no checkpoint to keep; nothing was exported."
    if run.dist.main:
        run.log.write({"kind": "nonfinite", "step": step, "parts": parts})
        best = ckpt_dir / "best.safetensors"
        good = sorted(p.name for p in ckpt_dir.glob("epoch-*.safetensors"))
        if good:
            kept = f"{run_dir} keeps the last good checkpoint ({good[-1]})"
            if recipe.train.export_on_failure:
                load_weights(run.step_module, best if best.exists() else ckpt_dir / good[-1])  # roll back
                export_run(run, {"recipe": recipe_path or recipe.name, "stopped": f"non-finite at step {step}"})
                kept += f" and its best good weights are exported to {run_dir / 'export'}"
            kept += "."
    distributed.cleanup()
    raise TrainingDiverged(diverged_message(step, parts, recipe.optim.lr, kept))
