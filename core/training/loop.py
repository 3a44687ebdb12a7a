"""The training loop: align any number of encoders with trainable heads, in one readable file.

    fuse train recipes/quickstart.yaml                        # one process, device auto
    fuse train recipes/vision_text.yaml train.epochs=3 output_dir=runs/x
    torchrun --nproc_per_node 8 -m fuse train recipes/fusemix_vision_text.yaml

Shape: setup (plan, data, model, cached latents, objectives, optimiser) -> eval before ->
train (steps that draw one batch from every trained pair; log, evaluate, checkpoint) -> save
(best weights, export, plot) -> cleanup. Batches, the step's loss, checkpoints, precision,
distribution and the schedule are small helpers called from here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from fuse.api.atomic import write_text
from fuse.api.devices import free_memory, resolve_device
from fuse.api.errors import RecipeError, TrainingDiverged
from fuse.api.weights import save_weights
from fuse.data.datasets import default_cache_root
from fuse.data.load import describe, load_data
from fuse.eval.report import format_table
from fuse.eval.val_split import evaluate_split
from fuse.model.export import export_model
from fuse.model.load import model_from_plan
from fuse.recipes.plan import Plan
from fuse.recipes.recipe import Recipe
from fuse.training import distributed
from fuse.training.batches import PairStream, first_micro_step
from fuse.training.checkpoints import epoch_file, keep_best, load_weights, prune_checkpoints, step_file, trainable_state
from fuse.training.finite import NonFiniteGuard, diverged_message
from fuse.training.freezing import set_trainable
from fuse.training.fsdp import full_optimizer_state, shard_encoders, unshard_encoders
from fuse.training.gradcache import Backward
from fuse.training.latent_tables import frozen_latents, mapped_tables
from fuse.training.metrics import MetricsLog, finite_json, plot_metrics, score
from fuse.training.optim import make_optimizer, param_groups, warmup_cosine
from fuse.training.precision import Precision
from fuse.training.preempt import Preempted, Preemption
from fuse.training.resume import restore, save_state
from fuse.training.rundir import open_run_dir
from fuse.training.step import StepModule


def build_objectives(plan: Plan, extra_dims: dict[str, int]) -> nn.ModuleDict:
    """Every objective, built for its own pair of modalities."""
    return nn.ModuleDict({o.key: o.spec.build(modalities=o.pair, embed_dim=plan.recipe.embed_dim, extra_dims=extra_dims)
                          for o in plan.objectives})


def steps_per_epoch(plan: Plan, streams: dict[tuple[str, str], PairStream]) -> int:
    """Optimiser steps in one epoch: a pass over the recipe's reference pair (train.epoch)."""
    return max(1, pass_batches(plan, streams) // plan.recipe.train.grad_accum)


def pass_batches(plan: Plan, streams: dict[tuple[str, str], PairStream]) -> int:
    """Batches in one pass over the recipe's reference pair (train.epoch)."""
    sizes = {p: len(s) for p, s in streams.items()}
    epoch = plan.recipe.train.epoch
    if epoch == "largest":
        n = max(sizes.values())
    elif epoch == "smallest":
        n = min(sizes.values())
    else:
        n = next(v for p, v in sizes.items() if set(p) == set(epoch))
    return n


def batch_field(recipe: Recipe, pair: tuple[str, str]) -> str:
    """The recipe field that sets a pair's batch size (for error messages)."""
    for i, entry in enumerate(recipe.data.pairs):
        if set(entry.modalities) == set(pair) and entry.batch_size:
            return f"data.pairs.{i}.batch_size"
    return "train.batch_size"


def train(plan: Plan, recipe_path: str | None = None, resume: bool = False) -> Path:
    """Run a resolved recipe (``fuse.recipes.plan.load_plan``) end to end; returns the run directory. ``resume`` continues the run in
    ``output_dir`` after its last checkpoint (see ``fuse.training.resume``). SIGTERM during the steps
    checkpoints and raises ``Preempted`` (see ``fuse.training.preempt``). Under torchrun only rank 0 prints."""
    quiet = int(os.environ.get("RANK", "0")) != 0  # torchrun's rank: known before the process group exists
    with Preemption() as preemption, open(os.devnull, "w") as devnull, \
            contextlib.redirect_stdout(devnull) if quiet else contextlib.nullcontext():
        return _train(plan, recipe_path, resume, preemption)


def _train(plan: Plan, recipe_path: str | None, resume: bool, preemption: Preemption) -> Path:
    # ------------------------------------------------------------------ setup
    recipe = plan.recipe
    device = distributed.setup(resolve_device(recipe.device))
    main = distributed.is_main()
    # Each rank's share of every pair's batch: checked before any data is read or encoded.
    local = {p.modalities: distributed.local_batch_size(p.batch_size, batch_field(recipe, p.modalities))
             for p in plan.pairs}
    torch.manual_seed(recipe.seed)  # identical head init on every rank
    run_dir = Path(recipe.output_dir)
    ckpt_dir = run_dir / "checkpoints"
    state = open_run_dir(run_dir, recipe, resume, main)  # checks first: a refused resume writes nothing
    cache_dir = Path(recipe.data.cache_dir or default_cache_root()).expanduser()
    # Every rank reads its data at once, none waiting in a collective (NCCL's timeout): a dataset build is
    # locked (one rank builds, the others wait on the lock), screening verdicts and shard indexes are atomic.
    splits = load_data(plan, {m: t.input_kinds[0] for m, t in plan.towers.items()}, cache_dir,
                       run_dir / "skipped_media.txt" if main else None)
    print(describe(splits))
    model = model_from_plan(plan).to(device)
    names = model.modalities

    # Frozen towers are encoded once (cached on disk unless data.cache_latents is false), each rank
    # its own slice; tables that do not fit the device stay memory-mapped (data.latents_on_device).
    room = [free_memory(device) // 2]
    frozen = {m for m, t in plan.towers.items() if t.frozen}
    for m, t in plan.towers.items():
        if t.trainable is not None:
            n = set_trainable(model.encoders[m], t.trainable, f"modalities.{m}.encoder.trainable")
            print(f"{m} encoder: {n / 1e6:.2f}M of its parameters are trained ({', '.join(t.trainable)})")
    latents: dict[str, dict] = {split: {} for split in splits}
    # In the recipe's order, never a set's: every rank must fill the same store at the same time
    # (string hashes, hence set order, differ between processes).
    for m in [m for m in plan.towers if m in frozen]:
        model.encoders[m].requires_grad_(False).eval()
        for split, d in splits.items():
            if m in d.values:
                latents[split][m] = frozen_latents(model.encoders[m], plan.towers[m].encoder.as_dict(), d.values[m],
                                                   recipe, cache_dir, device, f"{m}/{split}", room, model.uses_tokens)
    extras: dict[str, dict] = {split: {} for split in splits}
    extra_dims = {}
    for name, ex in plan.extras.items():
        enc = ex.encoder.build().to(device).eval().requires_grad_(False)
        extra_dims[name] = enc.info.dim
        for split, d in splits.items():
            if ex.modality in d.values:
                extras[split][name] = frozen_latents(enc, ex.encoder.as_dict(), d.values[ex.modality], recipe,
                                                     cache_dir, device, f"{name}/{split}", room)
        del enc

    objectives = build_objectives(plan, extra_dims).to(device)
    step_module = StepModule(model, objectives, plan.objectives, plan.pairs, frozen,
                            {n: e.modality for n, e in plan.extras.items()})
    step_module.latents, step_module.extras = latents["train"], extras["train"]
    online = {m: model.encoders[m] for m in names if m not in frozen}
    world = distributed.world_size()
    streams = {p.modalities: PairStream(splits["train"].pairs[p.modalities], splits["train"].table_pairs(p.modalities),
                                        local[p.modalities], {m: online[m] for m in p.modalities if m in online},
                                        device, recipe.seed, i, recipe.train.drop_last, recipe.data.num_workers,
                                        mapped_tables(step_module, p.modalities))
               for i, p in enumerate(plan.pairs)}
    accum = recipe.train.grad_accum
    per_epoch = steps_per_epoch(plan, streams)
    total_steps = recipe.train.max_steps or per_epoch * recipe.train.epochs
    epochs = math.ceil(total_steps / per_epoch)
    # GradCache and FSDP steps average the replicated parameters' gradients once by hand (fuse.training.gradcache);
    # plain ones use DDP. train.fsdp shards unfrozen encoders before the optimiser sees their parameters.
    chunked = recipe.train.chunk_size is not None and bool(online)
    sharded = recipe.train.fsdp and bool(online) and world > 1
    if chunked or sharded:
        distributed.broadcast_params(step_module)
    if sharded:
        for m, units in shard_encoders(online).items():
            mine = sum(p.to_local().numel() for p in online[m].parameters())
            total = sum(p.numel() for p in online[m].parameters())
            print(f"{m} encoder: fully sharded (FSDP) over {world} ranks, {units} blocks + the rest as units; "
                  f"this rank holds {mine / 1e6:.2f}M of its {total / 1e6:.2f}M parameters")
    elif recipe.train.fsdp:
        print("train.fsdp has no effect: " + ("every tower is frozen" if not online else
                                              "one process (launch with torchrun to shard encoders)"))
    gathers = main or sharded  # ranks that evaluate and gather whole weights (all of them under FSDP)
    trainable = [model.heads, objectives] + ([model.fusion] if model.fusion is not None else [])
    groups = param_groups({"heads": trainable, "encoders": list(online.values())},
                          recipe.optim.lr, recipe.optim.encoder_lr or recipe.optim.lr / 10,
                          recipe.optim.weight_decay)
    optimizer = make_optimizer(groups, recipe.optim.betas, recipe.optim.eps)
    scheduler = warmup_cosine(optimizer, recipe.schedule.warmup_steps, total_steps, recipe.schedule.min_lr_ratio)
    precision = Precision(recipe.train.precision, device)
    trainer = step_module if chunked or sharded else distributed.wrap(step_module, device, find_unused=bool(online))
    backward = Backward(step_module, trainer, precision, recipe.train.chunk_size,
                        list(online.values()) if sharded else [])
    params = [p for g in groups for p in g["params"]]
    guard = NonFiniteGuard(recipe.train.on_nonfinite, device, check_grads=precision.scaler is None)
    log = MetricsLog(run_dir / "metrics.jsonl", state["step"] if state else None) if main else None
    batch_desc = " + ".join(f"{s.batch_size}x{world}x{accum} {'-'.join(p)}" for p, s in streams.items())
    print(f"training {sum(p.numel() for p in params) / 1e6:.2f}M parameters for {total_steps} steps ({epochs} epochs "
          f"of {per_epoch}) on {device}, precision {precision.mode}, batch {batch_desc}"
          + (f", online towers in chunks of {recipe.train.chunk_size}" if chunked else ""))
    if recipe.train.chunk_size is not None and not chunked:
        print("train.chunk_size has no effect: every tower is frozen, so the batch is a lookup in the latent table")

    # ------------------------------------------------------------------ eval before
    trained = [p.modalities for p in plan.pairs]

    def validate() -> dict:
        """Validation retrieval of the current weights."""
        return evaluate_split(model, splits["val"], latents["val"], trained, recipe.eval.ks, recipe.eval.chunk_size,
                              recipe.data.encode_batch_size)

    results: dict[str, dict] = {}
    if "val" in splits and gathers:
        results["before"] = validate()
        if main and state is None:
            log.write({"kind": "val", "step": 0, "epoch": 0, **results["before"]})

    step, best, best_epoch, start_epoch = 0, -math.inf, None, 1
    if state is not None:
        load_weights(step_module, state["weights"])
        restore(state, optimizer, scheduler, precision, step_module)
        step, best, best_epoch, start_epoch = state["step"], state["best"], state["best_epoch"], state["epoch"] + 1
        guard.skipped = state.get("skipped_steps", 0)  # state.pt files before this count was saved: 0
        done = step - state["epoch"] * per_epoch  # steps of start_epoch already taken (a mid-epoch checkpoint)
        print(f"resuming after epoch {state['epoch']} (step {step}) from {state['weights']}" if not done else
              f"resuming at step {step} ({done} of {per_epoch} steps into epoch {start_epoch}) from {state['weights']}")

    def checkpoint(weights_file: Path, epochs_done: int, weights_written: bool = False) -> None:
        """Weights (unless written already) and state.pt after ``step``; every rank calls it (FSDP gathers)."""
        weights = trainable_state(step_module, keep=main) if gathers and not weights_written else None
        optimizer_state = full_optimizer_state(optimizer, keep=main) if gathers else None
        if main:
            if not weights_written:
                save_weights(weights, weights_file)
            save_state(ckpt_dir, weights=weights_file, epoch=epochs_done, step=step, best=best, best_epoch=best_epoch,
                       optimizer_state=optimizer_state, scheduler=scheduler, precision=precision, modules=step_module,
                       skipped_steps=guard.skipped)

    # ------------------------------------------------------------------ train
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not main, unit="step")
    t0, seen = time.perf_counter(), 0
    epoch = start_epoch - 1
    preemption.arm(device, every=recipe.train.log_every)
    for epoch in range(start_epoch, epochs + 1):
        # Each epoch begins a fresh pass of the reference pair; batches depend on the step alone.
        start = first_micro_step(step, per_epoch, accum, pass_batches(plan, streams))
        batches = {p: s.iterate(start) for p, s in streams.items()}
        trainer.train()
        for m in frozen:
            model.encoders[m].eval()  # frozen towers keep eval-mode BatchNorm/dropout
        for _ in range(step - (epoch - 1) * per_epoch, per_epoch):  # a resumed epoch skips the steps it took
            for j in range(accum):  # accumulate gradients over micro-batches, then one optimiser step
                batch = {p: next(it) for p, it in batches.items()}
                loss, terms = backward(batch, 1 / accum, last=j == accum - 1)  # plain or GradCache
                step_module.commit()
                seen += sum(rows.shape[0] for rows, *_ in batch.values())
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            ok = guard.check(step + 1, loss, terms, params)  # on the device: no host sync here
            log_step = (step + 1) % recipe.train.log_every == 0 or step == 0 or step + 1 == total_steps
            if guard.skip(ok):  # skip_step: drop a non-finite step's update
                optimizer.zero_grad(set_to_none=True)
                grad_norm = None
            else:  # the gradient norm only when clipping or logging: a tensor or None
                grad_norm = precision.step(optimizer, params, recipe.optim.grad_clip, norm=gathers and log_step)
            scheduler.step()
            step += 1
            bar.update(1)
            if log_step and guard.failure():  # read the flag only when logging
                break
            if main and log_step:  # the only place a step waits for the device (.item(), float())
                row = {"kind": "train", "step": step, "epoch": epoch, "loss": loss.item(), "lr": lr,
                       "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                       "samples_per_s": seen * world / (time.perf_counter() - t0)}
                if guard.mode == "skip_step":
                    row["skipped_steps"] = guard.skipped
                row.update({f"loss/{k}": v.item() for k, v in terms.items()} if len(terms) > 1 else {})
                for key, obj in objectives.items():
                    row.update({(f"{k}/{key}" if len(plan.pairs) > 1 else k): v for k, v in obj.metrics().items()})
                log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            if step >= total_steps:
                break
            # Inside an epoch: a checkpoint every train.checkpoint_every steps, and on SIGTERM (then stop).
            every, stop = recipe.train.checkpoint_every, preemption.requested(step)
            if (stop or (every and step % every == 0)) and step % per_epoch:  # an epoch's end checkpoints below
                if guard.failure():
                    break  # a non-finite step never reaches a checkpoint
                checkpoint(step_file(ckpt_dir, step), epoch - 1)
                if stop:
                    bar.close()
                    distributed.barrier()  # rank 0 has written the checkpoint
                    raise Preempted(step, run_dir)
        # A non-finite step never reaches a checkpoint: stop with the last good one kept.
        failed = guard.failure()
        if failed:
            bar.close()
            if sharded:  # rank 0 rolls back and exports whole encoders
                unshard_encoders(model.encoders, list(online), lambda m: plan.towers[m].encoder.build(), keep=main)
            stop_diverged(failed, recipe, recipe_path, run_dir, step_module, model, log, trained, main)
        # Evaluate, checkpoint, keep the best by the recipe's metric (under FSDP every rank evaluates).
        weights = trainable_state(step_module, keep=main) if gathers else None
        due = "val" in splits and (epoch % recipe.train.eval_every == 0 or step >= total_steps)
        metrics = validate() if due and gathers else None
        if main:
            save_weights(weights, epoch_file(ckpt_dir, epoch))
            if metrics is not None:
                log.write({"kind": "val", "step": step, "epoch": epoch, **metrics})
                if recipe.train.best_metric not in metrics:
                    raise RecipeError(f"train.best_metric: '{recipe.train.best_metric}' is not a val metric; "
                                      f"available: {', '.join(metrics)}")
                if score(recipe.train.best_metric, metrics[recipe.train.best_metric]) > best:
                    best, best_epoch = score(recipe.train.best_metric, metrics[recipe.train.best_metric]), epoch
                    keep_best(ckpt_dir, epoch)
        checkpoint(epoch_file(ckpt_dir, epoch), epoch, weights_written=True)
        if main:
            prune_checkpoints(ckpt_dir, recipe.train.keep_checkpoints)
        if step >= total_steps:
            break
        if preemption.requested(step):  # SIGTERM during an epoch's last step: its checkpoint above is the one
            bar.close()
            distributed.barrier()
            raise Preempted(step, run_dir)
    bar.close()

    # ------------------------------------------------------------------ save
    if sharded:  # whole encoders on rank 0 for the final evaluation and the export
        unshard_encoders(model.encoders, list(online), lambda m: plan.towers[m].encoder.build(), keep=main)
    if main:
        if best_epoch is not None:
            load_weights(step_module, ckpt_dir / "best.safetensors")
            results["after"] = validate()
            results["best_epoch"] = best_epoch
        else:
            keep_best(ckpt_dir, epoch)
        write_text(run_dir / "eval.json", json.dumps(finite_json(results), indent=2))
        if "after" in results:
            print(format_table({"before (untrained heads)": results["before"],
                                f"after (best epoch {best_epoch})": results["after"]}))
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "metrics.png")
        export_model(model, run_dir / "export", card={"recipe": recipe_path or recipe.name, "metrics": results},
                     pairs=trained, force=True, plots=[run_dir / "metrics.png"])
        print(f"run dir: {run_dir}  (metrics.jsonl, metrics.png, eval.json, checkpoints/, export/)")

    # ------------------------------------------------------------------ cleanup
    # The DDP reducer holds the process group: let it go while the group still lives. Freed after
    # destroy_process_group, the group's destructor joins gloo's worker threads with the GIL held
    # while a worker may need the GIL to free a finished collective's tensors (a hang at exit).
    del trainer, backward
    distributed.cleanup()
    return run_dir


def stop_diverged(failed, recipe, recipe_path, run_dir: Path, step_module, model, log, trained, main: bool):
    """Stop a run whose loss or gradients went NaN/Inf: log it, keep the last good checkpoint (and
    export the best good one, train.export_on_failure), then raise one line."""
    step, parts = failed
    ckpt_dir = run_dir / "checkpoints"
    kept = "No epoch had completed, so there is no checkpoint to keep; nothing was exported."
    if main:
        log.write({"kind": "nonfinite", "step": step, "parts": parts})
        best = ckpt_dir / "best.safetensors"
        good = sorted(p.name for p in ckpt_dir.glob("epoch-*.safetensors"))
        if good:
            kept = f"{run_dir} keeps the last good checkpoint ({good[-1]})"
            if recipe.train.export_on_failure:
                load_weights(step_module, best if best.exists() else ckpt_dir / good[-1])  # roll back
                export_model(model, run_dir / "export", card={"recipe": recipe_path or recipe.name,
                                                              "stopped": f"non-finite at step {step}"},
                             pairs=trained, force=True)
                kept += f" and its best good weights are exported to {run_dir / 'export'}"
            kept += "."
    distributed.cleanup()
    raise TrainingDiverged(diverged_message(step, parts, recipe.optim.lr, kept))
